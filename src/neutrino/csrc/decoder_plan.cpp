// See decoder_plan.h. The ops below are the ones the Python path calls (RMSNorm, Linear's quant methods,
// RotaryEmbedding.apply, TorchPagedAttention's decode, silu_and_mul), called as C++ functions.
#include "decoder_plan.h"

#include <ATen/ATen.h>

#include <string>

#include "kernels.h"

namespace {

// As write_slots in layers/attention/backend.py: index_copy_ for a few rows, index_put_ (12x faster at 512)
// above.
void write_slots(at::Tensor flat_cache, const at::Tensor& slots, const at::Tensor& rows) {
  if (rows.size(0) <= 16) flat_cache.index_copy_(0, slots, rows);
  else flat_cache.index_put_({slots}, rows);
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
  const int64_t L = num_layers(), T = hidden.size(0), q = hq_ * d_, kv = hkv_ * d_;
  TORCH_CHECK(norms_.size() == static_cast<size_t>(2 * L) && linears_.size() == static_cast<size_t>(4 * L),
              "DecoderPlan: ", norms_.size(), " norms and ", linears_.size(), " linears for ", L, " layers");
  TORCH_CHECK(static_cast<int64_t>(kv_caches.size()) == L, "DecoderPlan: ", kv_caches.size(), " KV caches for ",
              L, " layers");
  TORCH_CHECK(hidden.dim() == 2 && hidden.is_contiguous(), "DecoderPlan: hidden must be a contiguous [T, H]");
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
    write_slots(kc.view({-1, hkv_, d_}), slot_mapping, qkv.narrow(1, q, kv).view({T, hkv_, d_}));
    write_slots(vc.view({-1, hkv_, d_}), slot_mapping, qkv.narrow(1, q + kv, kv).view({T, hkv_, d_}));
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

}  // namespace neutrino
