"""`QuantizedLinearMethod`: what the low-bit methods (int8, int4, w8a8) share — registering the
checkpoint tensors of their `QuantFormat`, the portable torch path, and the large-batch dequantize path."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from neutrino.layers.quant.base import QuantMethod
from neutrino.layers.quant.format import QuantFormat, dequantize

# Dequantized weight slices per large-batch call stay below this many bytes: glibc serves them from its
# heap instead of fresh mmaps, whose page faults would cost more than the dequantization itself.
DEQUANT_CHUNK_BYTES = 8 << 20


class QuantizedLinearMethod(QuantMethod):
    """A linear layer whose weight is stored as the integer codes of `fmt` (one instance per layer).

    After loading, `process_weights_after_loading` converts the checkpoint tensors into a kernel's layout
    (CPU) or keeps them as they are for the torch path, which dequantizes on every call (CUDA, and CPU
    shapes no kernel covers). `max_kernel_tokens`: batches of at most this many tokens run the low-bit
    kernel; larger ones dequantize the weight per call (in slices) and run the compute dtype's GEMM."""

    max_kernel_tokens = 0

    def __init__(self, fmt: QuantFormat, source: str = "checkpoint") -> None:
        self.fmt = fmt
        self.source = source
        self.dtype = torch.float32
        self.in_features = self.out_features = 0

    def create_weights(
        self, layer: nn.Module, in_features: int, out_features: int, bias: bool, dtype: torch.dtype
    ) -> None:
        self.fmt.check(in_features, f"{self.source}: {getattr(layer, 'prefix', '') or 'linear layer'}")
        self.dtype, self.in_features, self.out_features = dtype, in_features, out_features
        for name, (shape, tdtype) in self.fmt.tensor_specs(out_features, in_features).items():
            layer.register_parameter(name, nn.Parameter(torch.empty(shape, dtype=tdtype), requires_grad=False))
        b = nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False) if bias else None
        layer.register_parameter("bias", b)

    def checkpoint_tensors(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(qweight, scales, zeros-or-mins) as loaded."""
        zero = getattr(layer, self.fmt.zero_tensor) if self.fmt.zero_tensor else None
        return layer.qweight, layer.scales, zero

    def drop_checkpoint_tensors(self, layer: nn.Module) -> None:
        """Free the loaded tensors once a kernel layout replaces them."""
        for name in self.fmt.tensor_names:
            delattr(layer, name)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.apply_2d(layer, x)
        y = self.apply_2d(layer, x.reshape(-1, x.shape[-1]))
        return y.view(*x.shape[:-1], y.shape[-1])

    def apply_2d(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`x @ W^T + b` for x of shape [num_tokens, in_features]."""
        return self.torch_apply(layer, x)

    def torch_apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Any device: dequantize the whole weight to x's dtype for this call, then `F.linear`."""
        weight = dequantize(self.fmt, *self.checkpoint_tensors(layer), x.dtype)
        return nn.functional.linear(x, weight, layer.bias)

    def rows(self, layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized rows `ids` [T] of the weight, [T, in_features] (embedding lookups)."""
        qweight, scales, zero = self.checkpoint_tensors(layer)
        return dequantize(self.fmt, qweight[ids], scales[ids], None if zero is None else zero[ids], dtype)


def add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y + bias in place (y is a fresh kernel output)."""
    return y if bias is None else y.add_(bias)


def dequant_matmul(x: torch.Tensor, out_features: int, align: int,
                   dequant_cols: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """x [M, K] @ W^T for large M: `dequant_cols(n0, n1)` gives W^T[:, n0:n1] ([K, n1 - n0], x's dtype);
    slices hold whole multiples of `align` rows and at most DEQUANT_CHUNK_BYTES."""
    k = x.shape[1]
    rows = max(align, DEQUANT_CHUNK_BYTES // (k * x.element_size()) // align * align)
    if rows >= out_features:
        return torch.mm(x, dequant_cols(0, out_features))
    parts = [torch.mm(x, dequant_cols(n0, min(out_features, n0 + rows))) for n0 in range(0, out_features, rows)]
    return torch.cat(parts, dim=1)

