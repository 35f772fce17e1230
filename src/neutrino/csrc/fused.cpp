// Fused bf16 elementwise kernels for CPU (AVX512-BF16). Each op does in one pass what the eager path
// does in four to six, with the same roundings to bf16 at the same points (so results equal the eager
// path's except where fp32 reduction order or the exp approximation moves a value across a bf16
// rounding boundary):
// - add_rms_norm_: residual <- bf16(x + residual); x <- bf16(w * bf16(rms_norm(residual))).
// - rms_norm_out: out <- bf16(w * bf16(rms_norm(x))).
// - rotary_neox_: x[t, h] <- bf16(bf16(x * cos) + bf16(rotate_half(x) * sin)) in place, for q and k.
// - silu_and_mul_out: out <- bf16(bf16(silu(gate)) * up).
#include <cmath>
#include <cstdint>

#include "kernels.h"
#include "vec.h"

namespace {

using namespace neutrino::vec;

#if NEUTRINO_HAVE_BF16
#define NEUTRINO_HAVE_FUSED 1

inline __m512 round_bf16(__m512 x) {  // fp32 -> bf16 -> fp32
  const __m256i h = (__m256i)_mm512_cvtneps_pbh(x);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// One row: optional residual add, then RMSNorm scaled by w; n % 16 == 0.
inline void norm_row(c10::BFloat16* out, const c10::BFloat16* x, c10::BFloat16* residual, const c10::BFloat16* w,
                     int64_t n, float eps) {
  __m512 ss = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    __m512 h = load16(x + i);
    if (residual != nullptr) {
      h = round_bf16(_mm512_add_ps(h, load16(residual + i)));
      store16(residual + i, h);
    }
    ss = _mm512_fmadd_ps(h, h, ss);
  }
  const float inv = 1.f / std::sqrt(_mm512_reduce_add_ps(ss) / static_cast<float>(n) + eps);
  const __m512 vinv = _mm512_set1_ps(inv);
  const c10::BFloat16* src = residual != nullptr ? residual : x;
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 normed = round_bf16(_mm512_mul_ps(load16(src + i), vinv));
    store16(out + i, _mm512_mul_ps(load16(w + i), normed));
  }
}
#else
#define NEUTRINO_HAVE_FUSED 0
#endif

void check_bf16_rows(const at::Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kBFloat16, name, " must be a bf16 CPU tensor");
  TORCH_CHECK(t.dim() == 2 && t.size(1) == n && t.stride(1) == 1, name, " must be [T, ", n,
              "] with contiguous rows");
}

}  // namespace

namespace neutrino {

bool fused_supported(int64_t n) { return NEUTRINO_HAVE_FUSED && n > 0 && n % 16 == 0; }

void add_rms_norm_(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps) {
  const int64_t n = weight.numel();
  TORCH_CHECK(fused_supported(n), "add_rms_norm_: unsupported size ", n, " or CPU");
  check_bf16_rows(x, "x", n);
  check_bf16_rows(residual, "residual", n);
  TORCH_CHECK(residual.size(0) == x.size(0) && weight.is_contiguous() && weight.scalar_type() == at::kBFloat16,
              "add_rms_norm_: shapes or weight dtype do not match");
#if NEUTRINO_HAVE_FUSED
  auto* xp = static_cast<c10::BFloat16*>(x.data_ptr());
  auto* rp = static_cast<c10::BFloat16*>(residual.data_ptr());
  const auto* wp = static_cast<const c10::BFloat16*>(weight.data_ptr());
  const int64_t xs = x.stride(0), rs = residual.stride(0);
  at::parallel_for(0, x.size(0), 16, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) norm_row(xp + t * xs, xp + t * xs, rp + t * rs, wp, n, float(eps));
  });
#endif
}

void rms_norm_out(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t n = weight.numel();
  TORCH_CHECK(fused_supported(n), "rms_norm_out: unsupported size ", n, " or CPU");
  check_bf16_rows(x, "x", n);
  check_bf16_rows(out, "out", n);
  TORCH_CHECK(out.size(0) == x.size(0) && weight.is_contiguous() && weight.scalar_type() == at::kBFloat16,
              "rms_norm_out: shapes or weight dtype do not match");
#if NEUTRINO_HAVE_FUSED
  auto* op = static_cast<c10::BFloat16*>(out.data_ptr());
  const auto* xp = static_cast<const c10::BFloat16*>(x.data_ptr());
  const auto* wp = static_cast<const c10::BFloat16*>(weight.data_ptr());
  const int64_t xs = x.stride(0), os = out.stride(0);
  at::parallel_for(0, x.size(0), 16, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) norm_row(op + t * os, xp + t * xs, nullptr, wp, n, float(eps));
  });
#endif
}

// x: [T, H, D] (any strides, D contiguous); cos/sin: [max_len, D] contiguous; NeoX halves of D.
void rotary_neox_(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kBFloat16 && x.stride(2) == 1, "x must be bf16 [T, H, D]");
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  TORCH_CHECK(fused_supported(half) && D % 2 == 0, "rotary_neox_: unsupported head_dim ", D, " or CPU");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.dim() == 2 && cos.size(1) == D &&
                  cos.sizes() == sin.sizes() && cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16,
              "cos/sin must be contiguous bf16 [max_len, head_dim]");
  TORCH_CHECK(positions.dim() == 1 && positions.size(0) == T && positions.scalar_type() == at::kLong &&
                  positions.is_contiguous(), "positions must be contiguous int64 [T]");
  const int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(pos[t] >= 0 && pos[t] < cos.size(0), "position ", pos[t], " is outside the rotary table");
#if NEUTRINO_HAVE_FUSED
  auto* xp = static_cast<c10::BFloat16*>(x.data_ptr());
  const auto* cp = static_cast<const c10::BFloat16*>(cos.data_ptr());
  const auto* sp = static_cast<const c10::BFloat16*>(sin.data_ptr());
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  at::parallel_for(0, T, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const c10::BFloat16* c = cp + pos[t] * D;
      const c10::BFloat16* s = sp + pos[t] * D;
      for (int64_t h = 0; h < H; ++h) {
        c10::BFloat16* row = xp + t * s0 + h * s1;
        for (int64_t i = 0; i < half; i += 16) {
          const __m512 x1 = load16(row + i), x2 = load16(row + half + i);
          // first half: x1 * cos - x2 * sin; second half: x2 * cos + x1 * sin (bf16 after each op)
          const __m512 a1 = round_bf16(_mm512_mul_ps(x1, load16(c + i)));
          const __m512 b1 = round_bf16(_mm512_mul_ps(x2, load16(s + i)));
          const __m512 a2 = round_bf16(_mm512_mul_ps(x2, load16(c + half + i)));
          const __m512 b2 = round_bf16(_mm512_mul_ps(x1, load16(s + half + i)));
          store16(row + i, _mm512_sub_ps(a1, b1));
          store16(row + half + i, _mm512_add_ps(a2, b2));
        }
      }
    }
  });
#endif
}

// x: [T, 2 * I] (gate | up), out: [T, I].
void silu_and_mul_out(const at::Tensor& out, const at::Tensor& x) {
  const int64_t I = out.size(1);
  TORCH_CHECK(fused_supported(I), "silu_and_mul_out: unsupported size ", I, " or CPU");
  check_bf16_rows(x, "x", 2 * I);
  check_bf16_rows(out, "out", I);
  TORCH_CHECK(out.size(0) == x.size(0), "silu_and_mul_out: row counts differ");
#if NEUTRINO_HAVE_FUSED
  auto* op = static_cast<c10::BFloat16*>(out.data_ptr());
  const auto* xp = static_cast<const c10::BFloat16*>(x.data_ptr());
  const int64_t xs = x.stride(0), os = out.stride(0);
  const __m512 one = _mm512_set1_ps(1.f);
  at::parallel_for(0, x.size(0), 4, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t)
      for (int64_t i = 0; i < I; i += 16) {
        const __m512 g = load16(xp + t * xs + i);
        const __m512 silu = round_bf16(_mm512_div_ps(g, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g)))));
        store16(op + t * os + i, _mm512_mul_ps(silu, load16(xp + t * xs + I + i)));
      }
  });
#endif
}

}  // namespace neutrino
