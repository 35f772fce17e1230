// See decoder_plan.h. The ops below are the ones the Python path calls (RMSNorm, Linear's quant methods,
// RotaryEmbedding.apply, TorchPagedAttention's decode, silu_and_mul), called as C++ functions.
#include "decoder_plan.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <string>

#include "dense.h"
#include "kernels.h"
#include "lowbit.h"
#include "paged_decode.h"

namespace {

// cache[0 or 1][slot[t]] = rows t of qkv's K (or V) columns, for both: what write_slots in
// layers/attention/backend.py does with index_copy_/index_put_, as plain row copies (the two index ops and
// their views took ~5 us a layer of a batch-1 step).
void write_kv(const at::Tensor& cache, const at::Tensor& slots, const at::Tensor& qkv, int64_t k0, int64_t kv) {
  TORCH_CHECK(cache.dim() == 5 && cache.size(0) == 2 && cache.is_contiguous() &&
              cache.size(3) * cache.size(4) == kv && cache.scalar_type() == qkv.scalar_type(),
              "DecoderPlan: the KV cache must be a contiguous [2, blocks, block_size, Hkv, D] of the model's dtype");
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) == qkv.size(0) && slots.scalar_type() == at::kLong &&
              slots.is_contiguous() && qkv.stride(1) == 1, "DecoderPlan: slot_mapping must be int64 [T]");
  const int64_t num_slots = cache.size(1) * cache.size(2), es = qkv.element_size(), T = qkv.size(0);
  const int64_t* sp = slots.data_ptr<int64_t>();
  const char* src = static_cast<const char*>(qkv.data_ptr());
  char* dst = static_cast<char*>(cache.data_ptr());
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(sp[t] >= 0 && sp[t] < num_slots, "DecoderPlan: slot ", sp[t], " is outside the KV cache");
    const char* row = src + t * qkv.stride(0) * es;
    std::memcpy(dst + sp[t] * kv * es, row + k0 * es, kv * es);
    std::memcpy(dst + (num_slots + sp[t]) * kv * es, row + (k0 + kv) * es, kv * es);
  }
}

}  // namespace

namespace neutrino {

at::Tensor PlanLinear::operator()(const at::Tensor& x) const {
  if (lowbit) {
    at::Tensor y = lowbit_linear(x.contiguous(), bits, weight, scales, offsets, group, exact);
    return bias.has_value() ? y.add_(*bias) : y;
  }
  if (x.size(0) <= max_rows) return dense_linear(x, weight, bias);
  return at::linear(x, weight, bias);
}

void PlanLinear::share(const at::Tensor& x, const at::Tensor& y, const Team& team) const {
  if (lowbit) {
    const LowbitCall call(x, bits, weight, scales, offsets, group, exact);
    const int64_t b0 = team.begin(call.blocks()), b1 = team.end(call.blocks());
    call.rows(y, b0, b1);
    if (bias.has_value()) y.narrow(1, b0 * 16, (b1 - b0) * 16).add_(bias->narrow(0, b0 * 16, (b1 - b0) * 16));
    return;
  }
  const DenseCall call(x, weight, bias);
  call.rows(y, team.begin(call.blocks()), team.end(call.blocks()));
}

DecoderPlan::DecoderPlan(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale,
                         at::Tensor cos, at::Tensor sin)
    : hq_(num_heads), hkv_(num_kv_heads), d_(head_dim), eps_(eps), scale_(scale), cos_(std::move(cos)),
      sin_(std::move(sin)) {
  TORCH_CHECK(hq_ > 0 && hkv_ > 0 && hq_ % hkv_ == 0 && d_ > 0, "DecoderPlan: heads ", hq_, "/", hkv_, " of ", d_);
}

void DecoderPlan::add_norm(at::Tensor weight) { norms_.push_back(std::move(weight)); }

void DecoderPlan::add_dense(at::Tensor weight, c10::optional<at::Tensor> bias, int64_t max_rows) {
  PlanLinear l;
  l.weight = std::move(weight);
  l.bias = std::move(bias);
  l.max_rows = max_rows;
  linears_.push_back(std::move(l));
}

void DecoderPlan::add_lowbit(at::Tensor q, at::Tensor scales, c10::optional<at::Tensor> offsets,
                             c10::optional<at::Tensor> bias, int64_t bits, int64_t group, bool exact) {
  PlanLinear l;
  l.lowbit = true;
  l.weight = std::move(q);
  l.scales = std::move(scales);
  l.offsets = std::move(offsets);
  l.bias = std::move(bias);
  l.bits = bits;
  l.group = group;
  l.exact = exact;
  linears_.push_back(std::move(l));
}

std::tuple<at::Tensor, at::Tensor> DecoderPlan::run(const at::Tensor& hidden, const at::Tensor& positions,
                                                    const std::vector<at::Tensor>& kv_caches,
                                                    const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                                                    const at::Tensor& seq_lens) const {
  const int64_t L = num_layers(), T = hidden.size(0);
  TORCH_CHECK(norms_.size() == static_cast<size_t>(2 * L) && linears_.size() == static_cast<size_t>(4 * L),
              "DecoderPlan: ", norms_.size(), " norms and ", linears_.size(), " linears for ", L, " layers");
  TORCH_CHECK(static_cast<int64_t>(kv_caches.size()) == L, "DecoderPlan: ", kv_caches.size(), " KV caches for ",
              L, " layers");
  TORCH_CHECK(hidden.dim() == 2 && hidden.is_contiguous(), "DecoderPlan: hidden must be a contiguous [T, H]");
  const bool team = team_ && !at::in_parallel_region() &&
                    std::all_of(linears_.begin(), linears_.end(), [&](const PlanLinear& l) { return l.splits(T); });
  if (team && L > 0) return run_team(hidden, positions, kv_caches, slot_mapping, block_tables, seq_lens);
  return run_ops(hidden, positions, kv_caches, slot_mapping, block_tables, seq_lens);
}

std::tuple<at::Tensor, at::Tensor> DecoderPlan::run_ops(const at::Tensor& hidden, const at::Tensor& positions,
                                                        const std::vector<at::Tensor>& kv_caches,
                                                        const at::Tensor& slot_mapping,
                                                        const at::Tensor& block_tables,
                                                        const at::Tensor& seq_lens) const {
  const int64_t L = num_layers(), T = hidden.size(0), q = hq_ * d_, kv = hkv_ * d_;
  at::Tensor residual = hidden;  // the embeddings, updated in place by the fused add + norm
  at::Tensor h = at::empty_like(hidden);
  if (L > 0) rms_norm_out(h, hidden, norms_[0], eps_);
  for (int64_t l = 0; l < L; ++l) {
    if (l > 0) add_rms_norm_(h, residual, norms_[2 * l], eps_);
    const PlanLinear* lin = linears_.data() + 4 * l;
    at::Tensor qkv = lin[0](h);  // [T, q + 2 kv]
    rotary_neox_(qkv.narrow(1, 0, q + kv).view({T, hq_ + hkv_, d_}), cos_, sin_, positions);
    const at::Tensor& cache = kv_caches[l];  // [2, num_blocks, block_size, Hkv, D]
    at::Tensor kc = cache.select(0, 0), vc = cache.select(0, 1);
    write_kv(cache, slot_mapping, qkv, q, kv);
    at::Tensor attn = at::empty({T, hq_, d_}, qkv.options());
    paged_decode_attention(attn, qkv.narrow(1, 0, q).view({T, hq_, d_}), kc, vc, block_tables, seq_lens, scale_,
                           false);
    h = lin[1](attn.view({T, q}));
    add_rms_norm_(h, residual, norms_[2 * l + 1], eps_);
    at::Tensor gate_up = lin[2](h);
    at::Tensor act = at::empty({T, gate_up.size(1) / 2}, gate_up.options());
    silu_and_mul_out(act, gate_up);
    h = lin[3](act);
  }
  return {h, residual};
}

// Shared buffers are written by one thread or in disjoint shares; the normed hidden states and the SwiGLU
// activations, small, are computed by every thread into its own buffers (no wait for one thread). The
// residual alternates between two buffers: thread 0 writes the next one while the others still read the
// current one.
std::tuple<at::Tensor, at::Tensor> DecoderPlan::run_team(const at::Tensor& hidden, const at::Tensor& positions,
                                                         const std::vector<at::Tensor>& kv_caches,
                                                         const at::Tensor& slot_mapping,
                                                         const at::Tensor& block_tables,
                                                         const at::Tensor& seq_lens) const {
  const int64_t L = num_layers(), T = hidden.size(0), q = hq_ * d_, kv = hkv_ * d_;
  for (const at::Tensor& c : kv_caches)  // write_kv and DecodeAttention::rebind take them as raw memory
    TORCH_CHECK(c.sizes() == kv_caches[0].sizes() && c.strides() == kv_caches[0].strides() &&
                c.scalar_type() == kv_caches[0].scalar_type() && c.device() == kv_caches[0].device(),
                "DecoderPlan: the layers' KV caches differ in shape, strides, dtype or device");
  const auto opts = hidden.options();
  at::Tensor res[2] = {hidden, at::empty_like(hidden)};  // res[0]: the embeddings, the first residual
  at::Tensor down = at::empty_like(hidden), o = at::empty_like(hidden);
  at::Tensor qkv = at::empty({T, linears_[0].out_features()}, opts), attn = at::empty({T, hq_, d_}, opts);
  at::Tensor gate_up = at::empty({T, linears_[2].out_features()}, opts);
  const at::Tensor qk_heads = qkv.narrow(1, 0, q + kv).view({T, hq_ + hkv_, d_});
  const at::Tensor q_heads = qkv.narrow(1, 0, q).view({T, hq_, d_}), attn_rows = attn.view({T, q});
  TeamState state;
  std::optional<DecodeAttention> job;
  std::atomic<int64_t> next{0};
  int cur = 0;  // the residual's buffer (every thread keeps the same count)
#pragma omp parallel num_threads(at::get_num_threads()) firstprivate(cur)
  {
    Team team(state);
    std::vector<float> scratch;
    at::Tensor h, mine, act;  // this thread's normed input, residual copy, activations
    team.all([&] {
      h = at::empty_like(hidden);
      mine = at::empty_like(hidden);
      act = at::empty({T, gate_up.size(1) / 2}, opts);
    });
    // h <- norm(x + residual); the residual moves to the other buffer.
    auto add_norm = [&](const at::Tensor& x, const at::Tensor& w) {
      at::Tensor& out = team.tid() == 0 ? res[cur ^ 1] : mine;
      out.copy_(res[cur]);
      add_rms_norm_out(h, x, out, w, eps_);
    };
    for (int64_t l = 0; l < L; ++l) {
      const PlanLinear* lin = linears_.data() + 4 * l;
      team.all([&] {
        if (l == 0) rms_norm_out(h, hidden, norms_[0], eps_);
        else add_norm(down, norms_[2 * l]);
        lin[0].share(h, qkv, team);
      });
      if (l > 0) cur ^= 1;
      team.barrier();
      team.single([&] {
        rotary_neox_(qk_heads, cos_, sin_, positions);
        const at::Tensor& cache = kv_caches[l];  // [2, num_blocks, block_size, Hkv, D]
        write_kv(cache, slot_mapping, qkv, q, kv);
        const char* k = static_cast<const char*>(cache.data_ptr());
        if (l == 0)
          job.emplace(attn, q_heads, cache.select(0, 0), cache.select(0, 1), block_tables, seq_lens, scale_, false, true);
        else
          job->rebind(k, k + cache.stride(0) * cache.element_size());
        next.store(0, std::memory_order_relaxed);
      });
      team.all([&] {
        if (!job->parallel() && team.tid() != 0) return;
        const int64_t n = job->units();
        scratch.resize(std::max<size_t>(scratch.size(), job->scratch_floats()));
        for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
             i = next.fetch_add(1, std::memory_order_relaxed))
          job->run(i, scratch.data());
      });
      team.barrier();
      team.all([&] { lin[1].share(attn_rows, o, team); });
      team.barrier();
      team.all([&] {
        add_norm(o, norms_[2 * l + 1]);
        lin[2].share(h, gate_up, team);
      });
      cur ^= 1;
      team.barrier();
      team.all([&] {
        silu_and_mul_out(act, gate_up);
        lin[3].share(act, down, team);
      });
      team.barrier();
    }
    if (team.tid() == 0) state.set_result(cur);
  }
  state.rethrow();
  return {down, res[state.result()]};
}

}  // namespace neutrino
