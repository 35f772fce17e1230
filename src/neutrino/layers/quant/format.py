"""`QuantFormat`: how one linear layer's checkpoint tensors encode its weight, and the reference (torch)
unpacking and dequantization every method falls back to (any device).

Tensors (see `QuantConfig`'s docstring), for a layer with N outputs, K inputs and G groups per row:
`qweight` (bits 8: int8 [N, K] symmetric / uint8 asymmetric; bits <= 4: uint8 [N, K / 2], element 2j in
the low nibble), `scales` float32 [N, G], and by zero-point kind:
- "none" (symmetric): w = (q - z) * s with z = 0 (8 bits) or 2**(bits - 1) (bits <= 4);
- "code" (`zeros` [N, G], asymmetric): w = (q - zeros) * s;
- "min" (`mins` [N, G], the GGUF Q4_0/Q4_1 form, loaded natively): w = q * s + mins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neutrino.errors import CheckpointError
from neutrino.layers.quant.config import QuantConfig

ZERO_KINDS = ("none", "code", "min")
_ZERO_TENSOR = {"code": "zeros", "min": "mins"}


@dataclass(frozen=True)
class QuantFormat:
    """Bits, group size (-1: one group per row), zero-point kind and scheme of one quantized linear."""

    bits: int
    group_size: int = -1
    zero: str = "none"
    scheme: str = "weight_only"  # or "w8a8" (8-bit symmetric per-channel weights, int8 activations)

    @classmethod
    def from_config(cls, cfg: QuantConfig) -> QuantFormat:
        return cls(cfg.bits, cfg.group_size, "none" if cfg.symmetric else "code", cfg.scheme)

    @property
    def zero_tensor(self) -> str | None:
        """Name of the zero-point tensor (`zeros` or `mins`), None when symmetric."""
        return _ZERO_TENSOR.get(self.zero)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """The checkpoint tensors of this format (besides `bias`)."""
        return ("qweight", "scales") + ((self.zero_tensor,) if self.zero_tensor else ())

    def group(self, in_features: int) -> int:
        """Elements per group for a layer with `in_features` inputs."""
        return in_features if self.group_size == -1 else self.group_size

    def check(self, in_features: int, where: str) -> None:
        """CheckpointError naming `where` when this format cannot describe a K = `in_features` layer."""
        if in_features % self.group(in_features):
            raise CheckpointError(f"{where}: quantization_config.group_size {self.group_size} does not divide "
                                  f"in_features {in_features}")
        if self.bits <= 4 and in_features % 2:
            raise CheckpointError(f"{where}: {self.bits}-bit codes are packed two per byte, so in_features "
                                  f"must be even, got {in_features}")

    def tensor_specs(self, out_features: int, in_features: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Checkpoint tensor name -> (shape, dtype) for an [out_features, in_features] weight."""
        n, k = out_features, in_features
        groups = k // self.group(k)
        if self.bits == 8:
            specs = {"qweight": ((n, k), torch.int8 if self.zero == "none" else torch.uint8)}
        else:
            specs = {"qweight": ((n, k // 2), torch.uint8)}
        specs["scales"] = ((n, groups), torch.float32)
        if self.zero_tensor is not None:
            specs[self.zero_tensor] = ((n, groups), torch.float32)
        return specs


def unpack_nibbles(qweight: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K / 2] (element 2j in the low nibble) -> uint8 codes [N, K]."""
    p = qweight.to(torch.int16)  # little-endian int16: low byte = element 2j, high byte = element 2j + 1
    return ((p & 15) | ((p & 0xF0) << 4)).view(torch.uint8).reshape(qweight.shape[0], -1)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] in [0, 15] -> uint8 [N, K / 2], element 2j in the low nibble."""
    v = codes.to(torch.uint8).contiguous().view(torch.int16)  # c[2j] + 256 c[2j + 1]
    return ((v | (v >> 4)) & 0xFF).to(torch.uint8)


def codes_of(fmt: QuantFormat, qweight: torch.Tensor) -> torch.Tensor:
    """The stored integer codes as [N, K]: int8 for symmetric 8 bits, uint8 otherwise."""
    return qweight if fmt.bits == 8 else unpack_nibbles(qweight)


def dequantize(fmt: QuantFormat, qweight: torch.Tensor, scales: torch.Tensor, zero: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor:
    """The dense weight [N, K] (computed in float32, then cast to `dtype`): the format's formula."""
    q = codes_of(fmt, qweight).float()
    n, k = q.shape
    groups = scales.shape[1]
    q = q.view(n, groups, k // groups)
    s = scales.float()[..., None]
    if fmt.zero == "min":
        w = q * s + zero.float()[..., None]  # type: ignore[union-attr]
    else:
        z = zero.float()[..., None] if fmt.zero == "code" else (0.0 if fmt.bits == 8 else 2.0 ** (fmt.bits - 1))
        w = (q - z) * s  # type: ignore[operator]
    return w.reshape(n, k).to(dtype)
