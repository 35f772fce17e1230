"""Wanda (Sun et al., 2023): prune by |w_ij| * ||X_j||_2, the weight magnitude times the L2 norm of
its input channel over the calibration tokens, comparing weights within each output row (or within
each M-block of a row for N:M). No weight update."""

from __future__ import annotations

import torch

from neutrino.compression.prune.masks import make_mask


def wanda_prune(w: torch.Tensor, input_sq_sum: torch.Tensor, sparsity: float,
                nm: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight, mask) for a [N, K] weight; `input_sq_sum` [K] is sum_t x_tj^2."""
    score = w.abs().float() * input_sq_sum.float().sqrt()[None, :]  # [N, K]
    mask = make_mask(score, sparsity, nm, rows=True)
    return w.masked_fill(mask, 0.0), mask
