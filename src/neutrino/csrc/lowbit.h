// One call of lowbit_linear in two steps, for callers that split the work themselves (the decoder plan's
// threads, decoder_plan.cpp): the constructor checks the tensors and prepares x (float32 rows, their
// quantization for the integer path); rows() computes the output row blocks [b0, b1) of 16 rows. Calls
// on disjoint blocks may run concurrently. A row's result does not depend on how the blocks are split.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace neutrino {

class LowbitCall {
 public:
  LowbitCall(const at::Tensor& x, int64_t bits, const at::Tensor& q, const at::Tensor& scales,
             const c10::optional<at::Tensor>& offsets, int64_t group_size, bool exact);
  int64_t blocks() const { return nblk_; }
  int64_t grain() const;  // row blocks per task that amortise a task's start
  // y: contiguous [M, N] of x's dtype.
  void rows(const at::Tensor& y, int64_t b0, int64_t b1) const;

 private:
  int64_t bits_, M_, K_, G_, nblk_, gs_, B_;
  bool off_;
  at::ScalarType xtype_, stype_;
  const void* q_;
  const void* s_;
  const void* o_;
  std::vector<float> xf_, xg_, xs_;
  std::vector<int8_t> xq_;
  std::vector<int32_t> xc_;
  mutable std::vector<float> yf_;  // float32 results before conversion (x not float32); disjoint per task
};

}  // namespace neutrino
