"""Int4 and 3-bit group-wise weight-only linear.

CPU: the blocked C++ kernel (`blocked.py`) reads the checkpoint's packed nibbles as they are (two codes
per byte, element 2j low), with w = c * s + o per group: o = -z * s for the zero point z (`zeros`, or
2**(bits - 1) when symmetric; 3-bit codes are 4-bit codes that never exceed 7) and o = m for GGUF's
w = c * d + m (Q4_1; Q4_0 has m = -8 d).

Fallback without the C++ library: torch's `aten._weight_int4pack_mm_for_cpu`, which computes
(c - 8) * scale + zero per group of 32/64/128/256: zero = (8 - z) * s (or 8 s + m), the kernel group
the largest of those dividing the format's group (per-channel: K), each scale repeated. CUDA and shapes
neither kernel takes: the torch path (dequantize per call).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from neutrino.layers.quant.blocked import BlockedLowBitMethod
from neutrino.layers.quant.format import unpack_nibbles
from neutrino.layers.quant.quantized import add_bias

KERNEL_GROUPS = (256, 128, 64, 32)


def kernel_group(group: int) -> int | None:
    """torch's int4 kernel group for a format group of `group` elements (None: none fits)."""
    return next((g for g in KERNEL_GROUPS if group % g == 0), None)


def pack_for_cpu(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] in [0, 15] -> torch's CPU int4 layout."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 2)


def packed_rows(packed: torch.Tensor, n: int, k: int, ids: torch.Tensor) -> torch.Tensor:
    """Codes of rows `ids` [T] from torch's CPU int4 layout, [T, K] uint8: 64-row blocks hold column k in
    32 bytes (rows j and 32 + j in the low and high nibble of byte j); the N % 64 tail rows pair
    adjacent rows in one byte per column."""
    flat = packed.reshape(-1)
    full = n // 64 * 64
    tail = max(n - full, 2)
    cols = torch.arange(k, device=packed.device)[None, :]
    j = (ids % 64)[:, None]
    in_full = (ids < full)[:, None]
    idx_full = (ids // 64)[:, None] * 32 * k + cols * 32 + j % 32
    jt = (ids - full)[:, None].clamp(min=0)
    idx_tail = full * k // 2 + cols * (tail // 2) + jt // 2
    shift = torch.where(in_full, (j >= 32) * 4, (jt % 2) * 4)
    byte = flat[torch.where(in_full, idx_full, idx_tail)]
    return (byte >> shift.to(torch.uint8)) & 15


@functools.cache
def cpu_layout_ok() -> bool:
    """Whether torch's CPU int4 layout is the one `packed_rows` decodes (checked once, full block + tail)."""
    n, k = 80, 64
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return torch.equal(packed_rows(pack_for_cpu(codes), n, k, torch.arange(n)), codes)


class Int4WeightOnlyMethod(BlockedLowBitMethod):
    """3- or 4-bit codes, float activations."""

    max_kernel_tokens = 12  # measured crossover with dequantize + bf16 GEMM (README, "Quantized checkpoints")

    def kernel_operands(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        s = layer.scales.float()
        return layer.qweight, s, self._offsets(layer, s)

    def _offsets(self, layer: nn.Module, s: torch.Tensor) -> torch.Tensor:
        """o with w = c * s + o (float32 [N, G])."""
        if self.fmt.zero == "min":
            return layer.mins.float()
        z = layer.zeros.float() if self.fmt.zero == "code" else 2.0 ** (self.fmt.bits - 1)
        return -z * s

    def fallback_process(self, layer: nn.Module) -> None:
        kgroup = kernel_group(self.fmt.group(self.in_features))
        if layer.qweight.device.type != "cpu" or kgroup is None or self.out_features % 16 or not cpu_layout_ok():
            return
        s = layer.scales.float()
        sz = torch.stack([s, 8.0 * s + self._offsets(layer, s)], dim=-1)
        sz = sz.repeat_interleave(self.fmt.group(self.in_features) // kgroup, dim=1)
        layer.int4_sz = sz.transpose(0, 1).contiguous().to(self.dtype)  # [K / kgroup, N, 2]
        layer.int4_packed = pack_for_cpu(unpack_nibbles(layer.qweight))
        self.kernel_group, self.path = kgroup, "aten"
        self.drop_checkpoint_tensors(layer)

    def fallback_apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.path != "aten":
            return self.torch_apply(layer, x)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(self.dtype).contiguous(), layer.int4_packed,
                                                       self.kernel_group, layer.int4_sz)
        return add_bias(y.to(x.dtype), layer.bias)

    def fallback_rows(self, layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.path != "aten":
            return super().fallback_rows(layer, ids, dtype)
        codes = packed_rows(layer.int4_packed, self.out_features, self.in_features, ids).float() - 8
        sz = layer.int4_sz[:, ids].float().transpose(0, 1)  # [T, K / kgroup, 2]
        w = codes.view(len(ids), -1, self.kernel_group) * sz[..., :1] + sz[..., 1:]
        return w.view(len(ids), self.in_features).to(dtype)
