"""SmoothQuant (Xiao et al., 2023) for W8A8: migrate activation outliers into the weights with
per-input-channel factors s_j = max|x_j|^alpha / max|W_:j|^(1 - alpha), folded into the op before each
group of linears (x / s there, W diag(s) in the linears; see `arch.fold_scales`). Weights are then
int8 per output channel (symmetric); activations are quantized per token at run time by the engine."""

from __future__ import annotations

import torch

_MIN = 1e-5


@torch.no_grad()
def smooth_scales(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """s [K] for input channels with calibration max |x| `act_absmax` [K] feeding `weights` ([N_i, K])."""
    w_absmax = torch.cat([w.float().abs() for w in weights], dim=0).amax(0).clamp(min=_MIN)  # [K]
    s = act_absmax.float().clamp(min=_MIN).pow(alpha) / w_absmax.pow(1.0 - alpha)
    return s.clamp(min=_MIN)
