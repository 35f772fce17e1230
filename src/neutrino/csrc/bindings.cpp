// The torch op libraries of one kernel variant: `neutrino_cpu` (attention and fused elementwise ops) and
// `neutrino_quant` (low-bit linears and W8A8 helpers). TORCH_LIBRARY, not pybind11: the shared object is
// loaded with torch.ops.load_library and needs no Python module of its own.
#include <torch/library.h>

#include <string>

#include "decoder_plan.h"
#include "kernels.h"

#ifndef NEUTRINO_VARIANT
#define NEUTRINO_VARIANT "unnamed"
#endif

TORCH_LIBRARY(neutrino_cpu, m) {
  m.def("variant() -> str", []() { return std::string(NEUTRINO_VARIANT); });
  m.def("isa() -> str", []() { return neutrino::attention_isa(); });
  m.def("paged_decode_attention(Tensor(a!) out, Tensor q, Tensor key_cache, Tensor value_cache, "
        "Tensor block_tables, Tensor seq_lens, float scale, bool force_generic=False) -> ()");
  m.def("paged_prefill_attention(Tensor(a!) out, Tensor q, Tensor key_cache, Tensor value_cache, "
        "Tensor block_tables, Tensor seq_ids, Tensor query_start_loc, Tensor seq_lens, float scale) -> ()");
  m.def("prefill_supported(int head_dim) -> bool", [](int64_t d) { return neutrino::prefill_supported(d); });
  m.def("fused_supported(int n) -> bool", [](int64_t n) { return neutrino::fused_supported(n); });
  m.def("add_rms_norm_(Tensor(a!) x, Tensor(b!) residual, Tensor weight, float eps) -> ()");
  m.def("rms_norm_out(Tensor(a!) out, Tensor x, Tensor weight, float eps) -> ()");
  m.def("rotary_neox_(Tensor(a!) x, Tensor cos, Tensor sin, Tensor positions) -> ()");
  m.def("silu_and_mul_out(Tensor(a!) out, Tensor x) -> ()");
  m.def("dense_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  using neutrino::DecoderPlan;
  m.class_<DecoderPlan>("DecoderPlan")
      .def(torch::init<int64_t, int64_t, int64_t, double, double, at::Tensor, at::Tensor>())
      .def("add_norm", &DecoderPlan::add_norm)
      .def("add_dense", &DecoderPlan::add_dense)
      .def("add_lowbit", &DecoderPlan::add_lowbit)
      .def("num_layers", &DecoderPlan::num_layers)
      .def("set_team", &DecoderPlan::set_team)
      .def("run", &DecoderPlan::run);
}

TORCH_LIBRARY_IMPL(neutrino_cpu, CPU, m) {
  m.impl("paged_decode_attention", &neutrino::paged_decode_attention);
  m.impl("dense_linear", &neutrino::dense_linear);
  m.impl("paged_prefill_attention", &neutrino::paged_prefill_attention);
  m.impl("add_rms_norm_", &neutrino::add_rms_norm_);
  m.impl("rms_norm_out", &neutrino::rms_norm_out);
  m.impl("rotary_neox_", &neutrino::rotary_neox_);
  m.impl("silu_and_mul_out", &neutrino::silu_and_mul_out);
}

TORCH_LIBRARY(neutrino_quant, m) {
  m.def("isa() -> str", []() { return neutrino::quant_isa(); });
  m.def("lowbit_linear(Tensor x, int bits, Tensor q, Tensor scales, Tensor? offsets, int group_size, "
        "bool exact=False) -> Tensor");
  m.def("lowbit_dequant(int bits, Tensor q, Tensor scales, Tensor? offsets, int group_size, ScalarType dtype, "
        "int n0, int n1) -> Tensor");
  m.def("quantize_per_token(Tensor x) -> (Tensor, Tensor)");
  m.def("w8a8_scale(Tensor acc, Tensor x_scale, Tensor w_scale, Tensor? bias, ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(neutrino_quant, CPU, m) {
  m.impl("lowbit_linear", &neutrino::lowbit_linear);
  m.impl("lowbit_dequant", &neutrino::lowbit_dequant);
  m.impl("quantize_per_token", &neutrino::quantize_per_token);
  m.impl("w8a8_scale", &neutrino::w8a8_scale);
}
