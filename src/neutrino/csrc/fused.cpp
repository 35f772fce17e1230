// Fused elementwise kernels for CPU (AVX2 + FMA, so every variant), for float32, bfloat16 and float16
// rows. Each op does in one pass what the eager path does in four to six, with the same roundings to
// the dtype at the same points (round8<T>), so results equal the eager path's except where fp32
// reduction order or the exp approximation moves a value across a rounding boundary:
// - add_rms_norm_: residual <- T(x + residual); x <- T(w * T(rms_norm(residual))) (add_rms_norm_out: into out).
// - rms_norm_out: out <- T(w * T(rms_norm(x))).
// - rotary_neox_: x[t, h] <- T(T(x * cos) + T(rotate_half(x) * sin)) in place (q and k heads in one call).
// - silu_and_mul_out: out <- T(T(silu(gate)) * up).
// All tensors of one call share the dtype T; rows have n % 8 == 0 elements.
#include <cmath>
#include <cstdint>

#include "kernels.h"
#include "vec.h"

namespace {

using namespace neutrino::vec;

#if NEUTRINO_HAVE_AVX2
#define NEUTRINO_HAVE_FUSED 1

// One row: optional residual add, then RMSNorm scaled by w.
template <typename T>
void norm_row(T* out, const T* x, T* residual, const T* w, int64_t n, float eps) {
  __m256 ss = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    __m256 h = load8(x + i);
    if (residual != nullptr) {
      h = round8<T>(_mm256_add_ps(h, load8(residual + i)));
      store8(residual + i, h);
    }
    ss = _mm256_fmadd_ps(h, h, ss);
  }
  const __m256 inv = _mm256_set1_ps(1.f / std::sqrt(hsum8(ss) / static_cast<float>(n) + eps));
  const T* src = residual != nullptr ? residual : x;
  for (int64_t i = 0; i < n; i += 8)
    store8(out + i, _mm256_mul_ps(load8(w + i), round8<T>(_mm256_mul_ps(load8(src + i), inv))));
}

// One head of D = 2 * half values, rotated in place with the cos/sin rows of its position.
template <typename T>
void rotate_head(T* row, const T* c, const T* s, int64_t half) {
  for (int64_t i = 0; i < half; i += 8) {
    const __m256 x1 = load8(row + i), x2 = load8(row + half + i);
    // first half: x1 * cos - x2 * sin; second half: x2 * cos + x1 * sin (rounded after each op)
    const __m256 a1 = round8<T>(_mm256_mul_ps(x1, load8(c + i)));
    const __m256 b1 = round8<T>(_mm256_mul_ps(x2, load8(s + i)));
    const __m256 a2 = round8<T>(_mm256_mul_ps(x2, load8(c + half + i)));
    const __m256 b2 = round8<T>(_mm256_mul_ps(x1, load8(s + half + i)));
    store8(row + i, _mm256_sub_ps(a1, b1));
    store8(row + half + i, _mm256_add_ps(a2, b2));
  }
}

// out[i] = T(silu(gate[i])) * up[i] for one row of I values.
template <typename T>
void silu_mul_row(T* out, const T* gate, const T* up, int64_t I) {
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t i = 0; i < I; i += 8) {
    const __m256 g = load8(gate + i);
    const __m256 silu = round8<T>(_mm256_div_ps(g, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g)))));
    store8(out + i, _mm256_mul_ps(silu, load8(up + i)));
  }
}
#else
#define NEUTRINO_HAVE_FUSED 0
#endif

void check_rows(const at::Tensor& t, const char* name, int64_t n, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype, name, " must be a CPU tensor of dtype ", dtype,
              " (got ", t.scalar_type(), ")");
  TORCH_CHECK(t.dim() == 2 && t.size(1) == n && t.stride(1) == 1, name, " must be [T, ", n,
              "] with contiguous rows (got ", t.sizes(), ")");
}

void check_dtype(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf,
              op, ": unsupported dtype ", t.scalar_type(), " (expected float32, bfloat16 or float16)");
}

}  // namespace

namespace neutrino {

bool fused_supported(int64_t n) { return NEUTRINO_HAVE_FUSED && n > 0 && n % 8 == 0; }

void add_rms_norm_out(const at::Tensor& out, const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                      double eps) {
  const int64_t n = weight.numel();
  TORCH_CHECK(fused_supported(n), "add_rms_norm: unsupported size ", n, " or CPU");
  check_dtype(x, "add_rms_norm");
  check_rows(x, "x", n, x.scalar_type());
  check_rows(out, "out", n, x.scalar_type());
  check_rows(residual, "residual", n, x.scalar_type());
  TORCH_CHECK(residual.size(0) == x.size(0) && out.size(0) == x.size(0) && weight.is_contiguous() &&
              weight.scalar_type() == x.scalar_type(), "add_rms_norm: shapes or weight dtype do not match");
#if NEUTRINO_HAVE_FUSED
  dispatch_float(x.scalar_type(), "add_rms_norm", [&](auto tag) {
    using T = decltype(tag);
    auto* op = static_cast<T*>(out.data_ptr());
    const auto* xp = static_cast<const T*>(x.data_ptr());
    auto* rp = static_cast<T*>(residual.data_ptr());
    const auto* wp = static_cast<const T*>(weight.data_ptr());
    const int64_t xs = x.stride(0), os = out.stride(0), rs = residual.stride(0);
    at::parallel_for(0, x.size(0), 16, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) norm_row(op + t * os, xp + t * xs, rp + t * rs, wp, n, float(eps));
    });
  });
#endif
}

void add_rms_norm_(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps) {
  add_rms_norm_out(x, x, residual, weight, eps);
}

void rms_norm_out(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t n = weight.numel();
  TORCH_CHECK(fused_supported(n), "rms_norm_out: unsupported size ", n, " or CPU");
  check_dtype(x, "rms_norm_out");
  check_rows(x, "x", n, x.scalar_type());
  check_rows(out, "out", n, x.scalar_type());
  TORCH_CHECK(out.size(0) == x.size(0) && weight.is_contiguous() && weight.scalar_type() == x.scalar_type(),
              "rms_norm_out: shapes or weight dtype do not match");
#if NEUTRINO_HAVE_FUSED
  dispatch_float(x.scalar_type(), "rms_norm_out", [&](auto tag) {
    using T = decltype(tag);
    auto* op = static_cast<T*>(out.data_ptr());
    const auto* xp = static_cast<const T*>(x.data_ptr());
    const auto* wp = static_cast<const T*>(weight.data_ptr());
    const int64_t xs = x.stride(0), os = out.stride(0);
    at::parallel_for(0, x.size(0), 16, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) norm_row(op + t * os, xp + t * xs, static_cast<T*>(nullptr), wp, n, float(eps));
    });
  });
#endif
}

// x: [T, H, D] (any strides, D contiguous); cos/sin: [max_len, D] contiguous; NeoX halves of D.
void rotary_neox_(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions) {
  check_dtype(x, "rotary_neox_");
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "x must be [T, H, D] with contiguous heads (got ", x.sizes(), ")");
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  TORCH_CHECK(fused_supported(half) && D % 2 == 0, "rotary_neox_: unsupported head_dim ", D, " or CPU");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.dim() == 2 && cos.size(1) == D &&
                  cos.sizes() == sin.sizes() && cos.scalar_type() == x.scalar_type() &&
                  sin.scalar_type() == x.scalar_type(),
              "cos/sin must be contiguous [max_len, head_dim] tensors of x's dtype");
  TORCH_CHECK(positions.dim() == 1 && positions.size(0) == T && positions.scalar_type() == at::kLong &&
                  positions.is_contiguous(), "positions must be contiguous int64 [T]");
  const int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(pos[t] >= 0 && pos[t] < cos.size(0), "position ", pos[t], " is outside the rotary table");
#if NEUTRINO_HAVE_FUSED
  dispatch_float(x.scalar_type(), "rotary_neox_", [&](auto tag) {
    using Tp = decltype(tag);
    auto* xp = static_cast<Tp*>(x.data_ptr());
    const auto* cp = static_cast<const Tp*>(cos.data_ptr());
    const auto* sp = static_cast<const Tp*>(sin.data_ptr());
    const int64_t s0 = x.stride(0), s1 = x.stride(1);
    at::parallel_for(0, T, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t)
        for (int64_t h = 0; h < H; ++h) rotate_head(xp + t * s0 + h * s1, cp + pos[t] * D, sp + pos[t] * D, half);
    });
  });
#endif
}

// x: [T, 2 * I] (gate | up), out: [T, I].
void silu_and_mul_out(const at::Tensor& out, const at::Tensor& x) {
  const int64_t I = out.size(1);
  TORCH_CHECK(fused_supported(I), "silu_and_mul_out: unsupported size ", I, " or CPU");
  check_dtype(x, "silu_and_mul_out");
  check_rows(x, "x", 2 * I, x.scalar_type());
  check_rows(out, "out", I, x.scalar_type());
  TORCH_CHECK(out.size(0) == x.size(0), "silu_and_mul_out: row counts differ");
#if NEUTRINO_HAVE_FUSED
  dispatch_float(x.scalar_type(), "silu_and_mul_out", [&](auto tag) {
    using T = decltype(tag);
    auto* op = static_cast<T*>(out.data_ptr());
    const auto* xp = static_cast<const T*>(x.data_ptr());
    const int64_t xs = x.stride(0), os = out.stride(0);
    at::parallel_for(0, x.size(0), 4, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) silu_mul_row(op + t * os, xp + t * xs, xp + t * xs + I, I);
    });
  });
#endif
}

}  // namespace neutrino
