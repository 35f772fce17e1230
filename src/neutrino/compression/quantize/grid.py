"""The integer grid of a quantized weight, and `QuantizedWeight`: codes, scales and zero points in the
checkpoint format of `neutrino.layers.quant.config` (read its docstring for the tensor layout).

Internally codes are always unsigned, q in [0, 2**bits - 1], and w = (q - z) * s per group:
- symmetric: s = 2 max|w| / (2**bits - 1), z = 2**(bits-1): all 2**bits codes are used (integers
  -2**(bits-1) .. 2**(bits-1) - 1); +-max|w| fall exactly half-way, so |w - dequant(w)| <= s / 2;
- asymmetric: s = (max - min) / (2**bits - 1), z = -min / s as a float, so the group's min and max are
  exactly codes 0 and 2**bits - 1 (this reproduces GGUF Q4_1 blocks exactly). With `integer_zero`
  (used after pruning) the range includes 0 and z is rounded, so a pruned zero stays exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neutrino.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class QuantGrid:
    """`bits` (3, 4 or 8), `group_size` (-1: one group per output row), symmetric or not."""

    bits: int
    group_size: int = -1
    symmetric: bool = True
    integer_zero: bool = False

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def groups(self, in_features: int) -> int:
        """Number of groups per row; ConfigError when `group_size` does not divide `in_features`."""
        if self.group_size == -1:
            return 1
        if in_features % self.group_size:
            raise ConfigError(f"group_size {self.group_size} does not divide in_features {in_features}")
        return in_features // self.group_size

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero), each [...], for the groups in the last dimension of `w` [..., group]."""
        if self.symmetric:
            scale = w.abs().amax(-1) * (2.0 / self.maxq)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            return scale, torch.full_like(scale, 2 ** (self.bits - 1))
        lo, hi = w.amin(-1), w.amax(-1)
        if self.integer_zero:
            lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = (hi - lo) / self.maxq
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = -lo / scale
        if self.integer_zero:
            zero = zero.round().clamp(0, self.maxq)
        return scale, zero

    def range_ratios(self, steps: int, min_ratio: float) -> list[float]:
        """Range scalings a search tries: 1, `steps` shrinks down to `min_ratio`, and (symmetric) the
        widening that makes +-max|w| exact codes (s = max|w| / (2**(bits-1) - 1); the plain grid puts
        them half a step out, which costs the largest weight of each group half a step)."""
        ratios = [1.0 - (1.0 - min_ratio) * i / steps for i in range(steps + 1)]
        return ratios + ([self.maxq / (self.maxq - 1)] if self.symmetric else [])

    def params_mse(self, w: torch.Tensor, steps: int = 20, min_ratio: float = 0.75, norm: float = 2.4,
                   weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `params`, with each group's range scaled by the `range_ratios` entry that minimises
        sum |w - Q(w)|^norm over the group (the GPTQ reference's `mse` quantizer, plus the widening);
        `weights` (broadcastable to `w`, e.g. each column's Hessian diagonal) weight that sum."""
        best_scale = best_zero = best_err = None
        for ratio in self.range_ratios(steps, min_ratio):
            scale, zero = self.params(w * ratio)
            err = (self.fake(w, scale[..., None], zero[..., None]) - w).abs().pow(norm)
            err = (err if weights is None else err * weights).sum(-1)
            if best_err is None:
                best_scale, best_zero, best_err = scale, zero, err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, scale, best_scale)
            best_zero = torch.where(better, zero, best_zero)
        assert best_scale is not None and best_zero is not None
        return best_scale, best_zero

    def codes(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Codes of `w` [..., k] for per-element-broadcastable `scale`, `zero`."""
        return torch.clamp(torch.round(w / scale + zero), 0, self.maxq)

    def fake(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize `w` with the given grid parameters."""
        return (self.codes(w, scale, zero) - zero) * scale


@dataclass
class QuantizedWeight:
    """A quantized [N, K] weight: unsigned codes, per-group scales and zero points (see module docstring)."""

    codes: torch.Tensor  # [N, K] uint8, values in [0, 2**bits - 1]
    scales: torch.Tensor  # [N, G] float32
    zeros: torch.Tensor  # [N, G] float32 (2**(bits-1) everywhere when symmetric)
    grid: QuantGrid

    def dequantize(self) -> torch.Tensor:
        """The dense float32 weight [N, K] these codes stand for."""
        n, k = self.codes.shape
        g = self.scales.shape[1]
        q = self.codes.float().view(n, g, k // g)
        return ((q - self.zeros[..., None]) * self.scales[..., None]).view(n, k)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """`{prefix}.qweight`, `.scales` and (asymmetric) `.zeros` as stored in the checkpoint."""
        out = {f"{prefix}.qweight": pack_codes(self.codes, self.grid),
               f"{prefix}.scales": self.scales.float().contiguous()}
        if not self.grid.symmetric:
            out[f"{prefix}.zeros"] = self.zeros.float().contiguous()
        return out


def codes_from_dequantized(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                           grid: QuantGrid) -> QuantizedWeight:
    """Codes of a weight that already lies on the grid (GPTQ's output) for its [N, G] parameters."""
    n, k = w.shape
    g = scale.shape[1]
    codes = grid.codes(w.float().reshape(n, g, k // g), scale[..., None], zero[..., None]).reshape(n, k)
    return QuantizedWeight(codes.to(torch.uint8), scale.float(), zero.float(), grid)


def pack_codes(codes: torch.Tensor, grid: QuantGrid) -> torch.Tensor:
    """`qweight` of the checkpoint: int8 (8-bit symmetric), uint8 (8-bit asymmetric) or two 4-bit codes
    per byte (bits <= 4; element 2j in the low nibble)."""
    if grid.bits == 8:
        return (codes.to(torch.int16) - 128).to(torch.int8) if grid.symmetric else codes.to(torch.uint8)
    if codes.shape[1] % 2:
        raise ConfigError(f"{grid.bits}-bit codes are packed two per byte: in_features {codes.shape[1]} is odd")
    c = codes.to(torch.uint8)
    return (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous()


def unpack_codes(qweight: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Inverse of `pack_codes`: unsigned codes [N, K] (8-bit symmetric codes are offset by 128)."""
    if bits == 8:
        if qweight.dtype not in (torch.int8, torch.uint8):
            raise CheckpointError(f"8-bit qweight must be int8 or uint8, got {qweight.dtype}")
        return qweight.to(torch.int16) + 128 if symmetric else qweight.to(torch.int16)
    if qweight.dtype != torch.uint8:
        raise CheckpointError(f"{bits}-bit qweight must be uint8 (two codes per byte), got {qweight.dtype}")
    low, high = qweight & 0x0F, qweight >> 4
    return torch.stack([low, high], dim=-1).reshape(qweight.shape[0], -1).to(torch.int16)


def dequantize_tensors(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                       bits: int, symmetric: bool) -> torch.Tensor:
    """Dense float32 [N, K] weight from checkpoint tensors (the format's dequantization formula)."""
    q = unpack_codes(qweight, bits, symmetric).float()
    n, k = q.shape
    g = scales.shape[1]
    if k % g:
        raise CheckpointError(f"scales have {g} groups, which do not divide in_features {k}")
    if symmetric:
        z = torch.full_like(scales, 2 ** (bits - 1), dtype=torch.float32)
    elif zeros is None:
        raise CheckpointError("an asymmetric quantized weight needs a 'zeros' tensor")
    else:
        z = zeros.float()
    return ((q.view(n, g, k // g) - z[..., None]) * scales.float()[..., None]).view(n, k)
