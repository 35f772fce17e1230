// Entry points of Neutrino's CPU kernels, registered as torch ops in bindings.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <tuple>

namespace neutrino {

// paged_decode.cpp: one query token per sequence over the paged KV cache.
void paged_decode_attention(const at::Tensor& out, const at::Tensor& q, const at::Tensor& key_cache,
                            const at::Tensor& value_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale, bool force_generic);
std::string attention_isa();  // "avx512+bf16", "avx512", "avx2" or "generic": the decode code path

// paged_prefill.cpp: causal attention of chunks of query rows (bf16, needs AVX512-BF16).
void paged_prefill_attention(const at::Tensor& out, const at::Tensor& q, const at::Tensor& key_cache,
                             const at::Tensor& value_cache, const at::Tensor& block_tables,
                             const at::Tensor& seq_ids, const at::Tensor& query_start_loc,
                             const at::Tensor& seq_lens, double scale);
bool prefill_supported(int64_t head_dim);

// fused.cpp: float32/bf16/fp16 elementwise kernels (AVX2, so every variant).
bool fused_supported(int64_t n);
void add_rms_norm_(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps);
void add_rms_norm_out(const at::Tensor& out, const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                      double eps);
void rms_norm_out(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps);
void rotary_neox_(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions);
void silu_and_mul_out(const at::Tensor& out, const at::Tensor& x);

// dense.cpp: y = x @ w^T + b for a few rows of x, streaming float32/bf16/fp16 weights once per call.
at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias);

// lowbit.cpp: weight-only int8/int4/3-bit linears in the 16-row blocked layout.
at::Tensor lowbit_linear(const at::Tensor& x, int64_t bits, const at::Tensor& q, const at::Tensor& scales,
                         const c10::optional<at::Tensor>& offsets, int64_t group_size, bool exact);
at::Tensor lowbit_dequant(int64_t bits, const at::Tensor& q, const at::Tensor& scales,
                          const c10::optional<at::Tensor>& offsets, int64_t group_size, at::ScalarType dtype,
                          int64_t n0, int64_t n1);
std::string quant_isa();  // "avx512-vnni", "avx512+avx2-int8", "avx2-int8" or "generic": lowbit_linear's paths

// w8a8.cpp: dynamic per-token int8 activations and the int32 accumulator's rescale.
std::tuple<at::Tensor, at::Tensor> quantize_per_token(const at::Tensor& x);
at::Tensor w8a8_scale(const at::Tensor& acc, const at::Tensor& x_scale, const at::Tensor& w_scale,
                      const c10::optional<at::Tensor>& bias, at::ScalarType dtype);

}  // namespace neutrino
