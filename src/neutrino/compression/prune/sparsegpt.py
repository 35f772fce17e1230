"""SparseGPT (Frantar & Alistarh, 2023): prune columns block by block, choosing the mask of each block
of `block_size` columns by the OBS saliency w^2 / [H^-1]_jj^2 of the weights as updated so far, and
spreading each pruned weight's error over the remaining columns (as GPTQ does for rounding).

Unstructured: in block b every output row prunes its count(s, end_b) - count(s, start_b) lowest-saliency
weights, so each row ends with exactly count(s, K) zeros. (The reference compares saliencies over the
whole block; comparing within rows, as Wanda does, gave 3% lower perplexity on SmolLM2 at 50%.)
N:M: at the first column of every M-block, the M - N lowest-saliency weights of each row are pruned."""

from __future__ import annotations

import torch

from neutrino.compression.hessian import inverse_cholesky_upper, prepare
from neutrino.compression.prune.masks import check_nm, count, lowest


def sparsegpt_prune(
    w: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    damp: float = 0.01,
    block_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated weight, mask) for a [N, K] weight and its input Hessian [K, K]."""
    W, H = prepare(w, hessian)
    n, k = W.shape
    if nm is not None:
        check_nm(k, nm[1])
        block_size = max(nm[1], block_size - block_size % nm[1])
    U = inverse_cholesky_upper(H, damp)
    mask = torch.zeros(n, k, dtype=torch.bool)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        d = torch.diag(U)[i1:i2]
        if nm is None:
            mask[:, i1:i2] = lowest(W1**2 / d[None, :] ** 2, count(sparsity, i2) - count(sparsity, i1))
        for i in range(i2 - i1):
            col = i1 + i
            if nm is not None and i % nm[1] == 0:
                sal = W1[:, i : i + nm[1]] ** 2 / d[None, i : i + nm[1]] ** 2
                mask[:, col : col + nm[1]] = lowest(sal, nm[1] - nm[0])
            w_col = W1[:, i]
            q = torch.where(mask[:, col], torch.zeros_like(w_col), w_col)
            err = (w_col - q) / U[col, col]
            W1[:, i:] -= err[:, None] * U[col, col:i2][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W.to(w.dtype), mask
