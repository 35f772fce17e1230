"""The C++ decoder plan of Llama-family models (`csrc/decoder_plan.h`): a decode step's decoder
layers in one call instead of ~20 Python-level ops and module calls per layer.

Measured on SmolLM2 Q4_0 in float32, batch 1, 2 vCPU AMD EPYC (AVX2): the linears and attention took
4.7 ms of a 9.5 ms forward; the rest was Python and dispatcher work around ~10 small ops per layer
(benchmarks/RESULTS.md). The plan calls the same kernels in the same order, so its results are
bit-identical to the Python path (tests/quant/test_decode_plan.py).

A plan is built on the model's first decode-only step (after the weights are processed) when every part
has a C++ form: CPU tensors in float32/bfloat16/float16, the fused elementwise kernels for the model's
sizes, no QK-norm, the paged torch attention backend, and a `QuantMethod.plan_entry` for every linear
(dense weights in the plain layout, the low-bit kernels). Otherwise, or with `NEUTRINO_DECODE_PLAN=0`,
the Python layers run (the reason is logged once at DEBUG). Batches above the smallest kernel limit of the
linears (`PlanEntry.max_tokens`), prefill and mixed steps always take the Python layers.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from neutrino.env import env_flag
from neutrino.layers.attention import cpu_kernels
from neutrino.layers.attention.backend import TorchPagedAttention
from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.layers.linear import Linear

logger = logging.getLogger(__name__)

PLAN_ENV = "NEUTRINO_DECODE_PLAN"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class NoPlan(Exception):
    """A part of the model the plan does not cover (the message says which)."""


class DecodePlan:
    """The plan of one model, built lazily; `enabled` (`NEUTRINO_DECODE_PLAN`, default on)
    switches it off, e.g. to compare with the Python layers."""

    def __init__(self) -> None:
        self.enabled = env_flag(PLAN_ENV, True)
        self.built = False
        self.plan: Any = None
        self.max_tokens = 0

    def for_step(self, model: torch.nn.Module, hidden: torch.Tensor, kv_caches: list[torch.Tensor],
                 meta: AttentionMetadata) -> Any:
        """The plan when it runs this step, else None."""
        if not (self.enabled and meta.decode_only and hidden.is_cpu):
            return None
        if not self.built:
            self.built = True
            try:
                self.plan, self.max_tokens = build(model)
            except NoPlan as e:
                logger.debug("decode steps run the Python layers: %s", e)
        if self.plan is None or hidden.shape[0] > self.max_tokens or kv_caches[0].dtype not in _DTYPES:
            return None
        return self.plan


def build(model: Any) -> tuple[Any, int]:
    """(torch.classes.neutrino_cpu.DecoderPlan of the model's layers, the largest batch it takes)."""
    dtype = model.norm.weight.dtype
    rotary, cfg = model.rotary, model.config
    if cpu_kernels.decode_kernel() is None or not hasattr(torch.classes.neutrino_cpu, "DecoderPlan"):
        raise NoPlan(f"no C++ kernels with a decoder plan ({cpu_kernels.last_error})")
    probe = torch.empty(0, dtype=dtype)
    sizes = (cfg.hidden_size, cfg.head_dim // 2, cfg.intermediate_size)
    if dtype not in _DTYPES or rotary.cos.dtype != dtype or not all(cpu_kernels.fused_supported(probe, n) for n in sizes):
        raise NoPlan(f"no fused kernels for {dtype} rows of {sizes}")
    first = model.layers[0].self_attn
    plan = torch.classes.neutrino_cpu.DecoderPlan(first.num_heads, first.num_kv_heads, first.head_dim,
                                                  float(cfg.rms_norm_eps), float(first.scale), rotary.cos, rotary.sin)
    max_tokens = 1 << 30
    for i, layer in enumerate(model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        if attn.q_norm is not None or type(attn.backend) is not TorchPagedAttention:
            raise NoPlan(f"layer {i}: QK-norm or attention backend {type(attn.backend).__name__}")
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if norm.weight.dtype != dtype or norm.eps != cfg.rms_norm_eps:
                raise NoPlan(f"layer {i}: a norm in {norm.weight.dtype} or with eps {norm.eps}")
            plan.add_norm(norm.weight)
        for linear in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
            max_tokens = min(max_tokens, add_linear(plan, linear))
    return plan, max_tokens


def add_linear(plan: Any, linear: Linear) -> int:
    """Add one linear to the plan; the largest batch its entry takes."""
    entry = linear.quant_method.plan_entry(linear)
    if entry is None:
        raise NoPlan(f"{linear.prefix}: {type(linear.quant_method).__name__} has no plan entry")
    getattr(plan, f"add_{entry.op}")(*entry.args)
    return entry.max_tokens
