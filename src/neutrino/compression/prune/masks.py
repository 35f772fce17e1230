"""Pruning masks from importance scores (True = pruned, i.e. set to zero).

Exact counts: an unstructured mask over a set of S scores prunes exactly floor(sparsity * S + 1/2) of
them (the lowest scores; ties broken by position); an N:M mask prunes exactly M - N of every M
consecutive input weights of each row."""

from __future__ import annotations

import math

import torch

from neutrino.errors import ConfigError


def count(sparsity: float, size: int) -> int:
    """Weights to prune out of `size` for `sparsity` (rounded half up)."""
    return int(math.floor(sparsity * size + 0.5))


def lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the `k` lowest entries of each row of `score` [R, C]."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, True)
    return mask


def per_row(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the same number, count(sparsity, K), of lowest scores in every row of [N, K]."""
    return lowest(score, count(sparsity, score.shape[1]))


def per_matrix(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the count(sparsity, N * K) lowest scores of the whole matrix."""
    flat = lowest(score.reshape(1, -1), count(sparsity, score.numel()))
    return flat.view_as(score)


def n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M mask: in every M consecutive columns of each row keep the N highest scores."""
    rows, cols = score.shape
    check_nm(cols, m)
    groups = score.reshape(rows * cols // m, m)
    return lowest(groups, m - n).view(rows, cols)


def check_nm(in_features: int, m: int) -> None:
    """ConfigError when an N:M pattern's M does not divide `in_features`."""
    if in_features % m:
        raise ConfigError(f"pattern block M={m} does not divide in_features {in_features}")


def make_mask(score: torch.Tensor, sparsity: float, nm: tuple[int, int] | None, rows: bool) -> torch.Tensor:
    """N:M mask if `nm`, else unstructured per row (`rows`) or over the whole matrix."""
    if nm is not None:
        return n_of_m(score, *nm)
    return per_row(score, sparsity) if rows else per_matrix(score, sparsity)
