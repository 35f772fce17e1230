"""Normalisation layers."""

from __future__ import annotations

import torch
from torch import nn

from neutrino.layers.attention import cpu_kernels


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back, as HF Llama does."""

    def __init__(self, hidden_size: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """norm(x); or, with `residual`, (norm(x + residual), x + residual) — the pre-norm block's add and
        norm in one pass on CPU (x and residual are then updated in place)."""
        fused = (x.dim() == 2 and x.stride(1) == 1 and x.dtype == self.weight.dtype
                 and cpu_kernels.fused_supported(x, x.shape[-1]))
        if residual is None:
            if fused:
                out = torch.empty_like(x)
                torch.ops.neutrino_cpu.rms_norm_out(out, x, self.weight, self.eps)
                return out
            return self._norm(x)
        if fused and residual.stride(1) == 1:
            torch.ops.neutrino_cpu.add_rms_norm_(x, residual, self.weight, self.eps)
            return x, residual
        residual = x + residual
        return self._norm(residual), residual

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        normed = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
        return self.weight * normed.to(x.dtype)
