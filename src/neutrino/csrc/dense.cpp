// Dense linears for decode-sized batches: y = x @ w^T + b with x [M, K], w [N, K] float32/bfloat16/float16
// in its plain layout, fp32 accumulation. Larger M is blocked in panels of x (below) and works at any M;
// which M it runs at is measured against the BLAS per machine and shape.
//
// At M = 1..8 a linear is a stream over the weights: the time is the bytes of w over the memory
// bandwidth. The BLAS sgemm under torch's F.linear reaches about 8 GB/s of a 22 GB/s read bandwidth on a
// 2-vCPU AMD EPYC (2026-12-03), oneDNN's bf16 path needs AVX-512. Here each thread streams its own
// contiguous slice of output rows, four rows at a time, each weight vector loaded once for two rows of
// x, so the weights are read once per call at close to the read bandwidth. Which M this beats the
// library at is measured per machine and shape at load (neutrino/layers/quant/dense_tuning.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "dense.h"
#include "kernels.h"
#include "vec.h"

namespace {

using neutrino::vec::dispatch_float;

#if NEUTRINO_HAVE_AVX512
struct V {
  using T = __m512;
  static constexpr int L = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T load(const c10::BFloat16* p) { return neutrino::vec::load16(p); }
  static T load(const c10::Half* p) { return neutrino::vec::load16(p); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(T a) { return _mm512_reduce_add_ps(a); }
  // 2L bf16 values as the L even- and the L odd-indexed ones in fp32: a shift and a mask, no shuffle
  static void load_pair(const c10::BFloat16* p, T& even, T& odd) {
    const __m512i raw = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
};
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
struct V {
  using T = __m256;
  static constexpr int L = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T load(const c10::BFloat16* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static T load(const c10::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static void load_pair(const c10::BFloat16* p, T& even, T& odd) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  static float sum(T a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
};
#else
struct V {  // portable fallback, one lane
  using T = float;
  static constexpr int L = 1;
  static T zero() { return 0.f; }
  template <typename W>
  static T load(const W* p) { return neutrino::vec::to_f(*p); }
  static float to_f(c10::BFloat16 v) { return static_cast<float>(v); }
  static T fma(T a, T b, T c) { return a * b + c; }
  static float sum(T a) { return a; }
  static void load_pair(const c10::BFloat16* p, T& even, T& odd) { even = to_f(p[0]), odd = to_f(p[1]); }
};
#endif

constexpr int kRows = 4;  // output rows per pass: 4 weight streams, 4 x MM accumulators
#ifndef NEUTRINO_DENSE_PREFETCH
#define NEUTRINO_DENSE_PREFETCH 8
#endif
constexpr int kPrefetchRows = NEUTRINO_DENSE_PREFETCH;  // prefetch the rows this far ahead

// y[m, n0:n0+R] for MM (1 or 2) rows of x starting at m; K % V::L == 0 (checked by the caller's tail).
template <int MM, int R, typename W>
inline void block(const float* x, int64_t K, const W* w, float* y, int64_t N) {
  typename V::T acc[MM][R];
  for (int i = 0; i < MM; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = V::zero();
  int64_t k = 0;
  for (; k + V::L <= K; k += V::L) {
    typename V::T xv[MM];
    for (int i = 0; i < MM; ++i) xv[i] = V::load(x + i * K + k);
    for (int r = 0; r < R; ++r) {
#if defined(__x86_64__)
      if constexpr (kPrefetchRows > 0)  // the same columns of the rows kPrefetchRows further on
        _mm_prefetch(reinterpret_cast<const char*>(w + (r + kPrefetchRows) * K + k), _MM_HINT_T0);
#endif
      const typename V::T wv = V::load(w + r * K + k);
      for (int i = 0; i < MM; ++i) acc[i][r] = V::fma(xv[i], wv, acc[i][r]);
    }
  }
  for (int i = 0; i < MM; ++i)
    for (int r = 0; r < R; ++r) {
      float s = V::sum(acc[i][r]);
      for (int64_t t = k; t < K; ++t) s += x[i * K + t] * neutrino::vec::to_f(w[r * K + t]);
      y[i * N + r] = s;
    }
}

// bf16 weights: 2L columns per step through load_pair, against x rearranged by `pair_layout` (in each
// chunk of 2L columns the even-indexed values first, then the odd ones; the tail in natural order).
template <int MM, int R>
inline void block_bf16(const float* x, int64_t K, const c10::BFloat16* w, float* y, int64_t N) {
  typename V::T acc[MM][R];
  for (int i = 0; i < MM; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = V::zero();
  int64_t k = 0;
  for (; k + 2 * V::L <= K; k += 2 * V::L) {
    typename V::T xe[MM], xo[MM];
    for (int i = 0; i < MM; ++i) xe[i] = V::load(x + i * K + k), xo[i] = V::load(x + i * K + k + V::L);
    for (int r = 0; r < R; ++r) {
#if defined(__x86_64__)
      if constexpr (kPrefetchRows > 0)
        _mm_prefetch(reinterpret_cast<const char*>(w + (r + kPrefetchRows) * K + k), _MM_HINT_T0);
#endif
      typename V::T we, wo;
      V::load_pair(w + r * K + k, we, wo);
      for (int i = 0; i < MM; ++i) acc[i][r] = V::fma(xo[i], wo, V::fma(xe[i], we, acc[i][r]));
    }
  }
  for (int i = 0; i < MM; ++i)
    for (int r = 0; r < R; ++r) {
      float s = V::sum(acc[i][r]);
      for (int64_t t = k; t < K; ++t) s += x[i * K + t] * neutrino::vec::to_f(w[r * K + t]);
      y[i * N + r] = s;
    }
}

void pair_layout(float* x, int64_t M, int64_t K) {
  constexpr int64_t C = 2 * V::L;
  float tmp[C];
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k + C <= K; k += C) {
      float* p = x + m * K + k;
      for (int64_t j = 0; j < V::L; ++j) tmp[j] = p[2 * j], tmp[V::L + j] = p[2 * j + 1];
      std::copy(tmp, tmp + C, p);
    }
}

// Rows of x per register block: 3 (fp32/fp16 weights: 12 accumulators of 16 AVX2 registers) or 2 (bf16
// weights, whose x is loaded as even/odd pairs); on AVX-512's 32 registers 4 and 2.
template <typename W>
constexpr int block_rows() {
  if constexpr (std::is_same_v<W, c10::BFloat16>) return 2;
  return V::L == 16 ? 4 : 3;
}

template <int MM, int R, typename W>
inline void block_any(const float* x, int64_t K, const W* w, float* y, int64_t N) {
  if constexpr (std::is_same_v<W, c10::BFloat16>) block_bf16<MM, R>(x, K, w, y, N);
  else block<MM, R, W>(x, K, w, y, N);
}

template <int R, typename W>
inline void rows(const float* x, int64_t M, int64_t K, const W* w, float* y, int64_t N) {
  constexpr int MM = block_rows<W>();
  int64_t m = 0;
  for (; m + MM <= M; m += MM) block_any<MM, R>(x + m * K, K, w, y + m * N, N);
  if constexpr (MM > 3) {
    if (m + 3 <= M) block_any<3, R>(x + m * K, K, w, y + m * N, N), m += 3;
  }
  if constexpr (MM > 2) {
    if (m + 2 <= M) block_any<2, R>(x + m * K, K, w, y + m * N, N), m += 2;
  }
  if (m < M) block_any<1, R>(x + m * K, K, w, y + m * N, N);
}

// Rows of x per panel: the panel (this many bytes) stays in L2 while the thread's weight rows pass
// over it kRows at a time, so at large M the weights are read once per panel and x once per weight block.
constexpr int64_t kPanelBytes = 128 << 10;

template <typename W>
void linear_rows(const float* x, int64_t M, int64_t K, const W* w, float* y, int64_t N, int64_t n0, int64_t n1) {
  constexpr int MM = block_rows<W>();
  const int64_t panel = std::max<int64_t>(MM, kPanelBytes / (K * static_cast<int64_t>(sizeof(float))) / MM * MM);
  for (int64_t m0 = 0; m0 < M; m0 += panel) {
    const int64_t mp = std::min(panel, M - m0);
    const float* xp = x + m0 * K;
    float* yp = y + m0 * N;
    int64_t n = n0;
    for (; n + kRows <= n1; n += kRows) rows<kRows>(xp, mp, K, w + n * K, yp + n, N);
    for (; n < n1; ++n) rows<1>(xp, mp, K, w + n * K, yp + n, N);
  }
}

}  // namespace

namespace neutrino {

DenseCall::DenseCall(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias)
    : weight_(weight), bias_(bias.has_value() && bias->defined() ? bias : c10::nullopt) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "dense_linear: CPU tensors expected");
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "dense_linear: x [M, K] and ",
              "weight [N, K] expected, got ", x.sizes(), " and ", weight.sizes());
  TORCH_CHECK(weight.is_contiguous(), "dense_linear: weight must be contiguous");
  M_ = x.size(0), K_ = x.size(1), N_ = weight.size(0);
  xf_ = x.to(at::kFloat).contiguous();
  if (weight.scalar_type() == at::kBFloat16) {
    if (xf_.data_ptr() == x.data_ptr()) xf_ = xf_.clone();  // rearranged in place below: never the caller's x
    pair_layout(xf_.data_ptr<float>(), M_, K_);
  }
  if (x.scalar_type() != at::kFloat) yf_ = at::empty({M_, N_}, x.options().dtype(at::kFloat));
}

int64_t DenseCall::blocks() const { return (N_ + kRows - 1) / kRows; }

void DenseCall::rows(const at::Tensor& y, int64_t b0, int64_t b1) const {
  TORCH_CHECK(y.is_contiguous() && y.dim() == 2 && y.size(0) == M_ && y.size(1) == N_ &&
              (yf_.defined() ? y.scalar_type() != at::kFloat : y.scalar_type() == at::kFloat),
              "dense rows: y must be a contiguous [", M_, ", ", N_, "] of x's dtype");
  const int64_t n0 = b0 * kRows, n1 = std::min(N_, b1 * kRows);
  if (M_ == 0 || n0 >= n1) return;
  float* yp = yf_.defined() ? yf_.data_ptr<float>() : y.data_ptr<float>();
  dispatch_float(weight_.scalar_type(), "dense_linear", [&](auto tag) {
    using W = decltype(tag);
    linear_rows(xf_.data_ptr<float>(), M_, K_, weight_.data_ptr<W>(), yp, N_, n0, n1);
  });
  if (bias_.has_value())
    dispatch_float(bias_->scalar_type(), "dense_linear bias", [&](auto tag) {
      using B = decltype(tag);
      const B* bp = bias_->data_ptr<B>();
      for (int64_t m = 0; m < M_; ++m)
        for (int64_t n = n0; n < n1; ++n) yp[m * N_ + n] += static_cast<float>(bp[n]);
    });
  if (yf_.defined())
    dispatch_float(y.scalar_type(), "dense_linear y", [&](auto tag) {
      using T = decltype(tag);
      T* out = y.data_ptr<T>();
      for (int64_t m = 0; m < M_; ++m)
        for (int64_t n = n0; n < n1; ++n) out[m * N_ + n] = static_cast<T>(yp[m * N_ + n]);
    });
}

at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  const DenseCall call(x, weight, bias);
  at::Tensor y = at::empty({x.size(0), weight.size(0)}, x.options());
  at::parallel_for(0, call.blocks(), 16, [&](int64_t b0, int64_t b1) { call.rows(y, b0, b1); });
  return y;
}

}  // namespace neutrino
