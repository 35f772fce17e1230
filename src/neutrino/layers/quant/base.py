"""The QuantMethod interface: how a linear layer creates, post-processes and applies its weights."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch
from torch import nn

from neutrino.kernels.torch_features import cpu_has_bf16_gemm


class PlanEntry(NamedTuple):
    """How a decoder plan (`models/decode_plan.py`) runs a linear: `DecoderPlan.add_<op>(*args)`, for
    batches of at most `max_tokens` tokens (the Python path's kernel for them)."""

    op: str  # "dense" or "lowbit"
    args: tuple[Any, ...]
    max_tokens: int


class QuantMethod(ABC):
    """Owns the weight format of a linear layer; a new format is one new subclass."""

    @abstractmethod
    def create_weights(
        self, layer: nn.Module, in_features: int, out_features: int, bias: bool, dtype: torch.dtype
    ) -> None:
        """Register the layer's parameters (`weight`, `bias`); `Linear.load_shard` fills them."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:  # noqa: B027 - optional hook
        """Repack loaded weights into the kernel's preferred layout (no-op by default)."""

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Compute `x @ W^T + b` for x of shape [num_tokens, in_features]."""

    def plan_entry(self, layer: nn.Module) -> PlanEntry | None:
        """The C++ decoder plan's form of `apply` for small batches, or None: no plan for the model."""
        return None


class UnquantizedLinearMethod(QuantMethod):
    """Dense weights in the model dtype through `F.linear` (oneDNN/AMX for bf16 on CPU)."""

    def create_weights(
        self, layer: nn.Module, in_features: int, out_features: int, bias: bool, dtype: torch.dtype
    ) -> None:
        weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype), requires_grad=False)
        layer.register_parameter("weight", weight)
        layer.dense_max_rows = 0  # set by dense_tuning on CPU; a plain attribute keeps apply() cheap
        if bias:
            layer.register_parameter(
                "bias", nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False)
            )
        else:
            layer.register_parameter("bias", None)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """On CPU, bf16 weights are reordered once into oneDNN's blocked layout: the plain-layout call
        reorders the weight on every call, which costs about half the time of a batch-1 step."""
        if _can_prepack(layer.weight):
            layer.packed_weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), 1)
            layer.weight = None  # the packed copy is the only one kept

    def plan_entry(self, layer: nn.Module) -> PlanEntry | None:
        if getattr(layer, "packed_weight", None) is not None or not layer.weight.is_cpu:
            return None
        return PlanEntry("dense", (layer.weight, layer.bias, layer.dense_max_rows), 1 << 30)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        packed = getattr(layer, "packed_weight", None)
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, layer.bias, "none", [], "")
        if x.dim() == 2 and x.shape[0] <= getattr(layer, "dense_max_rows", 0):
            return torch.ops.neutrino_cpu.dense_linear(x, layer.weight, layer.bias)  # see dense_tuning
        return nn.functional.linear(x, layer.weight, layer.bias)


def _can_prepack(weight: torch.Tensor | None) -> bool:
    return (
        weight is not None
        and weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and _onednn_bf16()
    )


def _onednn_bf16() -> bool:
    """oneDNN's bf16 linear needs AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT; an AVX2-only CPU keeps the
    plain layout (F.linear)."""
    return hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and cpu_has_bf16_gemm()
