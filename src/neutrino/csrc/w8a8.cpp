// W8A8 helpers for CPU (`neutrino_quant::quantize_per_token`, `w8a8_scale`):
// - quantize_per_token(x[M,K] T) -> (xq int8, x_scale f32[M]): symmetric dynamic int8 per row,
//   x_scale = max|x| / 127 (1 for an all-zero row), xq = round_half_even(x / x_scale).
// - w8a8_scale(acc[M,N] int32, x_scale[M], w_scale[N], bias?, dtype) -> y: (acc * x_scale) * w_scale + b.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "kernels.h"
#include "vec.h"

namespace neutrino {

using vec::dispatch_float;

std::tuple<at::Tensor, at::Tensor> quantize_per_token(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x: [M, K] with unit column stride");
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor xq = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor xs = at::empty({M}, x.options().dtype(at::kFloat));
  int8_t* qp = xq.data_ptr<int8_t>();
  float* sp = xs.data_ptr<float>();
  dispatch_float(x.scalar_type(), "quantize_per_token", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data_ptr<T>();
    const int64_t s0 = x.stride(0);
    at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        const T* r = xp + m * s0;
        float amax = 0.f;
        for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(static_cast<float>(r[k])));
        const float s = amax > 0.f ? amax / 127.f : 1.f;
        sp[m] = s;
        for (int64_t k = 0; k < K; ++k) {
          const float v = std::nearbyint(static_cast<float>(r[k]) / s);
          qp[m * K + k] = static_cast<int8_t>(std::min(127.f, std::max(-128.f, v)));
        }
      }
    });
  });
  return {xq, xs};
}

at::Tensor w8a8_scale(const at::Tensor& acc, const at::Tensor& xs, const at::Tensor& ws,
                      const c10::optional<at::Tensor>& bias, at::ScalarType dtype) {
  TORCH_CHECK(acc.dim() == 2 && acc.scalar_type() == at::kInt, "acc: int32 [M, N]");
  const at::Tensor a = acc.contiguous(), xf = xs.to(at::kFloat).contiguous(), wf = ws.to(at::kFloat).contiguous();
  const int64_t M = a.size(0), N = a.size(1);
  TORCH_CHECK(xf.numel() == M && wf.numel() == N, "x_scale [M], w_scale [N]");
  at::Tensor bf;
  if (bias.has_value()) bf = bias->to(at::kFloat).contiguous();
  const float* bp = bias.has_value() ? bf.data_ptr<float>() : nullptr;
  at::Tensor out = at::empty({M, N}, a.options().dtype(dtype));
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / N), [&](int64_t m0, int64_t m1) {
    dispatch_float(dtype, "w8a8_scale", [&](auto tag) {
    using scalar_t = decltype(tag);
      for (int64_t m = m0; m < m1; ++m) {
        const int32_t* ar = a.data_ptr<int32_t>() + m * N;
        const float sx = xf.data_ptr<float>()[m];
        scalar_t* orow = out.data_ptr<scalar_t>() + m * N;
        const float* w = wf.data_ptr<float>();
        for (int64_t n = 0; n < N; ++n) {
          float v = (static_cast<float>(ar[n]) * sx) * w[n];
          if (bp) v += bp[n];
          orow[n] = static_cast<scalar_t>(v);
        }
      }
    });
  });
  return out;
}

}  // namespace neutrino
