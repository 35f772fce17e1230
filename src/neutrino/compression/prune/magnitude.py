"""Magnitude pruning: zero the smallest |w| of the whole matrix (unstructured) or of every M
consecutive input weights of a row (N:M). Needs no calibration data."""

from __future__ import annotations

import torch

from neutrino.compression.prune.masks import make_mask


def magnitude_prune(w: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight, mask) for a [N, K] weight; mask True = pruned."""
    mask = make_mask(w.abs().float(), sparsity, nm, rows=False)
    return w.masked_fill(mask, 0.0), mask
