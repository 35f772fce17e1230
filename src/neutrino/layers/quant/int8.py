"""Int8 weight-only linear: per-channel or group-wise (GGUF Q8_0: groups of 32), symmetric or not.

CPU: the blocked C++ kernel (`blocked.py`): symmetric codes as they are; unsigned asymmetric codes as
q - 128 with the per-group offset (128 - z) * s, so w = q' * s + o exactly. Without the C++ library,
symmetric per-channel weights use `aten._weight_int8pack_mm` (small batches) and everything else, and
CUDA, the torch path (dequantize per call).
"""

from __future__ import annotations

import torch
from torch import nn

from neutrino.layers.quant.blocked import BlockedLowBitMethod
from neutrino.layers.quant.quantized import add_bias


class Int8WeightOnlyMethod(BlockedLowBitMethod):
    """8-bit codes, float activations."""

    max_kernel_tokens = 16  # measured crossover with dequantize + bf16 GEMM (README, "Quantized checkpoints")

    def kernel_operands(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        qweight, scales, zero = self.checkpoint_tensors(layer)
        s = scales.float()
        if self.fmt.zero == "none":
            return qweight, s, None
        q = (qweight.to(torch.int16) - 128).to(torch.int8)
        offsets = (128.0 - zero.float()) * s if self.fmt.zero == "code" else 128.0 * s + zero.float()
        return q, s, offsets

    def fallback_process(self, layer: nn.Module) -> None:
        if layer.qweight.device.type == "cpu" and self.fmt.zero == "none" and layer.scales.shape[1] == 1:
            layer.q8, layer.s8 = layer.qweight.contiguous(), layer.scales.view(-1).to(self.dtype)
            self.path = "aten"
            self.drop_checkpoint_tensors(layer)

    def fallback_apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.path != "aten":
            return self.torch_apply(layer, x)
        if x.shape[0] <= self.max_kernel_tokens and x.dtype == self.dtype:
            y = torch.ops.aten._weight_int8pack_mm(x.contiguous(), layer.q8, layer.s8)
        else:
            y = nn.functional.linear(x, layer.q8.to(x.dtype) * layer.s8.to(x.dtype)[:, None])
        return add_bias(y, layer.bias)

    def fallback_rows(self, layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.path != "aten":
            return super().fallback_rows(layer, ids, dtype)
        return (layer.q8[ids].float() * layer.s8[ids].float()[:, None]).to(dtype)
