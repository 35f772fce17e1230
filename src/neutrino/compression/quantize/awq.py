"""AWQ (Lin et al., 2023): activation-aware weight quantization. Salient input channels (large mean
|x|) are protected by scaling them up before rounding: W' = W diag(s), x' = x / s, with
s = mean|x|^alpha (or, AutoAWQ's "duo scaling", mean|x|^alpha / mean|w_norm|^(1 - alpha), w_norm being
the weights divided by their group's max), normalised; alpha (and the form) are searched on a grid to
minimise the error of the group's outputs on calibration rows. The scales are folded into the op before
the group (see `arch.fold_scales`), so the checkpoint needs no extra tensor. Then a per-group range
ratio is searched (`QuantGrid.range_ratios` down to 0.5; not for q_proj / k_proj, as in the reference)
and the weights are rounded to nearest."""

from __future__ import annotations

import torch

from neutrino.compression.quantize.grid import QuantGrid
from neutrino.compression.quantize.rtn import fake_quantize

CLIP_TOKENS = 512  # calibration rows used by the clip search
CLIP_STEPS = 20
CLIP_MIN_RATIO = 0.5


@torch.no_grad()
def search_scales(rows: torch.Tensor, mean_abs: torch.Tensor, weights: list[torch.Tensor], grid: QuantGrid,
                  n_grid: int = 20) -> tuple[torch.Tensor, float]:
    """(s [K], alpha) minimising ||X W^T - X (Q(W diag s) / s)^T||^2 over the group's stacked weights;
    `rows` [T, K] are calibration inputs, `mean_abs` [K] the mean |x| over all calibration tokens."""
    W = torch.cat([w.float() for w in weights], dim=0)  # [sum N, K]
    x = rows.float()
    ref = x @ W.T
    w_mean = weight_mean(W, grid)
    best_loss, best_s, best_alpha = float("inf"), torch.ones_like(mean_abs), 0.0
    for duo in (False, True):
        for r in range(n_grid):
            alpha = r / n_grid
            s = awq_scales(mean_abs, alpha, w_mean if duo else None)
            out = x @ (fake_quantize(W * s[None, :], grid) / s[None, :]).T
            loss = float((ref - out).pow(2).mean())
            if loss < best_loss:
                best_loss, best_s, best_alpha = loss, s, alpha
    return best_s, best_alpha


def weight_mean(W: torch.Tensor, grid: QuantGrid) -> torch.Tensor:
    """Mean over output rows of |w| / max|w of its group| per input channel [K]."""
    n, k = W.shape
    g = grid.groups(k)
    wg = W.abs().reshape(n, g, k // g)
    return (wg / (wg.amax(-1, keepdim=True) + 1e-6)).reshape(n, k).mean(0)


def awq_scales(mean_abs: torch.Tensor, alpha: float, w_mean: torch.Tensor | None = None) -> torch.Tensor:
    """s = mean|x|^alpha [K] (divided by w_mean^(1 - alpha) when given), normalised so that
    max(s) * min(s) = 1."""
    s = mean_abs.float().clamp(min=1e-4).pow(alpha)
    if w_mean is not None:
        s = (s / (w_mean.float().pow(1.0 - alpha) + 1e-4)).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


@torch.no_grad()
def search_clip(w: torch.Tensor, rows: torch.Tensor, grid: QuantGrid) -> torch.Tensor:
    """Per-group range ratios [N, G] (`QuantGrid.range_ratios` down to CLIP_MIN_RATIO) minimising each
    group's output error sum_t (x_tg . (w_g - Q(w_g)))^2 on up to CLIP_TOKENS calibration rows."""
    n, k = w.shape
    g = grid.groups(k)
    step = max(1, rows.shape[0] // CLIP_TOKENS)
    x = rows[::step][:CLIP_TOKENS].float().reshape(-1, g, k // g)  # [T, G, gs]
    wg = w.float().reshape(n, g, k // g)
    best_err = torch.full((n, g), float("inf"))
    best = torch.ones(n, g)
    for ratio in grid.range_ratios(CLIP_STEPS, CLIP_MIN_RATIO):
        clip = torch.full((n, g), ratio)
        diff = wg - fake_quantize(w, grid, clip).reshape(n, g, k // g)
        err = torch.einsum("tgk,ngk->ntg", x, diff).pow(2).sum(1)  # [N, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, clip, best)
    return best
