// DecoderPlan: the decode steps of a Llama-family decoder stack (pre-norm, fused q|k|v and gate|up, NeoX
// rotary, SwiGLU, paged KV cache) in one C++ call, built once per model from the layers' tensors. Each step
// runs the same kernels in the same order as the Python layers (bit-identical results), without their
// per-op Python and dispatcher work: ~10 ops and ~8 module calls per layer, which took about half of a
// batch-1 step of SmolLM2 (30 layers) on 2 vCPUs. When every linear can split its rows over threads at
// the step's batch (share()), the whole stack runs in one OpenMP parallel region (team.h): the threads
// share each linear's output rows and the attention's (sequence, kv head) units, and wait for each other
// at ~6 barriers a layer, instead of starting and ending a region per op (on a 2-vCPU AMD EPYC that took
// Q4_0 batch-1 decode from ~6.1 to ~4.8 ms a token).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "team.h"

namespace neutrino {

// y = x @ W^T + b through the kernel the layer's quant method runs for decode-sized batches.
struct PlanLinear {
  bool lowbit = false;
  at::Tensor weight;                   // dense [N, K] (plain layout) or the lowbit blocked codes
  at::Tensor scales;                   // lowbit only
  c10::optional<at::Tensor> offsets;   // lowbit only
  c10::optional<at::Tensor> bias;
  int64_t bits = 0, group = 0;         // lowbit only
  int64_t max_rows = 0;                // dense: dense_linear up to this many rows, at::linear above
  bool exact = false;                  // lowbit only
  at::Tensor operator()(const at::Tensor& x) const;
  int64_t out_features() const { return lowbit ? weight.size(0) * 16 : weight.size(0); }
  bool splits(int64_t rows) const { return lowbit || rows <= max_rows; }  // share() runs at this batch
  // This thread's share of y = x @ W^T + b (x's dtype); every thread of the team calls it.
  void share(const at::Tensor& x, const at::Tensor& y, const Team& team) const;
};

class DecoderPlan : public torch::CustomClassHolder {
 public:
  DecoderPlan(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale,
              at::Tensor cos, at::Tensor sin);
  // Per layer, in order: add_norm (input), add_norm (post-attention); linears qkv, o, gate_up, down.
  void add_norm(at::Tensor weight);
  void add_dense(at::Tensor weight, c10::optional<at::Tensor> bias, int64_t max_rows);
  void add_lowbit(at::Tensor q, at::Tensor scales, c10::optional<at::Tensor> offsets,
                  c10::optional<at::Tensor> bias, int64_t bits, int64_t group, bool exact);
  int64_t num_layers() const { return static_cast<int64_t>(norms_.size() / 2); }
  // Whether run() may take one parallel region for the whole step (run_team; default) or runs op by op.
  void set_team(bool on) { team_ = on; }
  // hidden [T, H] (the embeddings; becomes the first residual) -> (hidden, residual) after the last
  // layer, as LlamaDecoderLayer returns them. One query token per sequence (decode-only batches).
  std::tuple<at::Tensor, at::Tensor> run(const at::Tensor& hidden, const at::Tensor& positions,
                                         const std::vector<at::Tensor>& kv_caches, const at::Tensor& slot_mapping,
                                         const at::Tensor& block_tables, const at::Tensor& seq_lens) const;

 private:
  // run() op by op, each op parallel on its own (a batch some linear's share() does not take).
  std::tuple<at::Tensor, at::Tensor> run_ops(const at::Tensor& hidden, const at::Tensor& positions,
                                             const std::vector<at::Tensor>& kv_caches, const at::Tensor& slot_mapping,
                                             const at::Tensor& block_tables, const at::Tensor& seq_lens) const;
  // run() in one parallel region (Team): the linears and attention split over the threads, the small
  // elementwise ops on one.
  std::tuple<at::Tensor, at::Tensor> run_team(const at::Tensor& hidden, const at::Tensor& positions,
                                              const std::vector<at::Tensor>& kv_caches,
                                              const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                                              const at::Tensor& seq_lens) const;

  int64_t hq_, hkv_, d_;
  bool team_ = true;
  double eps_, scale_;
  at::Tensor cos_, sin_;
  std::vector<at::Tensor> norms_;
  std::vector<PlanLinear> linears_;
};

}  // namespace neutrino
