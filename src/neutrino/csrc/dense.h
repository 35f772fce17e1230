// One call of dense_linear in two steps, for callers that split the work themselves (the decoder plan's
// threads): the constructor prepares x (float32, rearranged for bf16 weights); rows() computes output
// blocks [b0, b1) of kRows rows (bias added, converted to x's dtype). Calls on disjoint blocks may run
// concurrently; a row's result does not depend on how the blocks are split.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace neutrino {

class DenseCall {
 public:
  DenseCall(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias);
  int64_t blocks() const;
  // y: contiguous [M, N] of x's dtype.
  void rows(const at::Tensor& y, int64_t b0, int64_t b1) const;

 private:
  at::Tensor xf_, weight_, yf_;  // yf_: float32 results when x is not float32
  c10::optional<at::Tensor> bias_;
  int64_t M_, K_, N_;
};

}  // namespace neutrino
