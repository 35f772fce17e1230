"""GPTQ (Frantar et al., 2022): quantize the columns of W one at a time and spread each column's
error over the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs.

- Lazy batch updates: columns are processed in blocks of `block_size`; inside a block the update is
  applied to the block only, and to the rest of the matrix once per block.
- Groups: without act-order a group's scale and zero are found when its first column is reached, from
  the weights as updated so far. With `act_order` columns go by decreasing Hessian diagonal and every
  group's parameters are fixed up front (the checkpoint format has no column permutation).
- `hessian_mse` (with `mse`): the range search weights each column's error by its Hessian diagonal
  (the mean squared input of that column), so clipping spares the weights of large inputs.
- `mask` (pruned weights, True = zero): those weights are forced to zero, so pruning then GPTQ keeps the
  sparsity and compensates the pruning error too.
"""

from __future__ import annotations

import torch

from neutrino.compression.hessian import inverse_cholesky_upper, prepare
from neutrino.compression.quantize.grid import QuantGrid, QuantizedWeight, codes_from_dequantized


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    grid: QuantGrid,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    mask: torch.Tensor | None = None,
    mse: bool = False,
    hessian_mse: bool = False,
) -> QuantizedWeight:
    """GPTQ-quantize a [N, K] weight given the Hessian [K, K] (2/n X^T X) of its inputs; `mse` searches
    each group's clipping range (`QuantGrid.params_mse`) instead of taking its min and max."""
    W, H = prepare(w, hessian)
    n, k = W.shape
    num_groups = grid.groups(k)
    gs = k // num_groups
    col_weight = torch.diag(H).clamp_min(0).reshape(num_groups, gs) if hessian_mse else None

    def find(block: torch.Tensor, g: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of all groups ([n, G, gs] blocks, g None) or of group g ([n, gs])."""
        if not mse:
            return grid.params(block)
        weights = None if col_weight is None else col_weight if g is None else col_weight[g]
        return grid.params_mse(block, weights=weights)

    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(k)
    fixed = act_order or grid.group_size == -1
    scales = torch.empty(n, num_groups)
    zeros = torch.empty(n, num_groups)
    if fixed:
        s, z = find(W.reshape(n, num_groups, gs))
        scales.copy_(s)
        zeros.copy_(z)
    if act_order:
        W, H = W[:, perm], H[perm][:, perm]
        mask = mask[:, perm] if mask is not None else None
    U = inverse_cholesky_upper(H, damp)
    Q = torch.zeros_like(W)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            g = int(perm[col]) // gs
            if not fixed and col % gs == 0:  # first column of a group: its parameters, from current W
                block = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :gs]
                scales[:, g], zeros[:, g] = find(block, g)
            w_col = W1[:, i]
            q = grid.fake(w_col, scales[:, g], zeros[:, g])
            if mask is not None:
                q = torch.where(mask[:, col], torch.zeros_like(q), q)
            err = (w_col - q) / U[col, col]
            W1[:, i:] -= err[:, None] * U[col, col:i2][None, :]
            Q[:, col] = q
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if act_order:
        Q = Q[:, torch.argsort(perm)]
    return codes_from_dequantized(Q, scales, zeros, grid)
