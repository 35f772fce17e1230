"""Rotary position embeddings (NeoX / HF-Llama layout), with Llama 3 frequency scaling."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from neutrino.errors import ConfigError
from neutrino.layers.attention import cpu_kernels


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = float(scaling["factor"])
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def compute_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies [head_dim / 2] for the given rope type ("default", "llama3", "linear")."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling or {})
    if rope_type == "linear":
        return inv_freq / float((scaling or {})["factor"])
    raise ConfigError(f"unsupported rope_scaling type {rope_type!r}; supported: default, linear, llama3")


class RotaryEmbedding(nn.Module):
    """Applies rotary embeddings to q and k given absolute positions; cos/sin cached up to max_len."""

    def __init__(
        self, head_dim: int, max_len: int, theta: float, scaling: dict[str, Any] | None, dtype: torch.dtype
    ) -> None:
        super().__init__()
        inv_freq = compute_inv_freq(head_dim, theta, scaling)
        t = torch.arange(max_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # [max_len, head_dim / 2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [max_len, head_dim]
        self.register_buffer("cos", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin", emb.sin().to(dtype), persistent=False)
        self.half = head_dim // 2

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cos, sin [T, 1, D] for the batch's positions, and the positions; computed once per step, shared
        by all layers."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1), positions

    def in_place(self, x: torch.Tensor) -> bool:
        """Whether `apply` rotates rows of x's dtype and device in place (the fused CPU kernel)."""
        return x.stride(-1) == 1 and self.cos.dtype == x.dtype and cpu_kernels.fused_supported(x, self.half)

    def apply(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Rotate x [T, H, D] (NeoX layout: the two halves of D form the complex pairs). On CPU x is
        rotated in place in one pass (same roundings as the eager ops) and returned."""
        cos, sin, positions = cos_sin
        if self.in_place(x):
            torch.ops.neutrino_cpu.rotary_neox_(x, self.cos, self.sin, positions)
            return x
        x1, x2 = x[..., : self.half], x[..., self.half :]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin
