"""The layer-wise Hessian H = 2/n X^T X of a linear layer's inputs and its damped inverse, shared by
GPTQ and SparseGPT (both solve min ||X W^T - X Q^T|| column by column with the OBS update)."""

from __future__ import annotations

import torch

from neutrino.errors import ConfigError

_MAX_DAMP_TRIES = 6


def prepare(w: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 copies of the weight [N, K] and Hessian [K, K]; input channels never seen (dead: zero
    diagonal) get H_jj = 1 and their weights zeroed, as in the GPTQ reference."""
    W = w.detach().float().clone()
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    return W, H


def inverse_cholesky_upper(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1; the damping grows tenfold (up to five
    times) if H is not positive definite. Raises ConfigError if it never becomes so."""
    k = H.shape[0]
    mean_diag = torch.diag(H).mean()
    eye = torch.eye(k, dtype=H.dtype, device=H.device)
    for attempt in range(_MAX_DAMP_TRIES):
        L, info = torch.linalg.cholesky_ex(H + eye * (damp * 10**attempt * mean_diag))
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U
    raise ConfigError(f"the calibration Hessian ({k}x{k}) is not positive definite even with damping "
                      f"{damp * 10 ** (_MAX_DAMP_TRIES - 1)}; use more calibration samples")


def output_target(w: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor, damp: float) -> torch.Tensor:
    """The weight W' [N, K] whose outputs on this model's inputs X best fit the uncompressed model's
    outputs X_ref W^T: least squares, held towards W by the ridge `damp` (as in `inverse_cholesky_upper`):
    W'^T = (H + l I)^-1 (C W^T + l W^T) with H = X^T X, C = X^T X_ref, so W' = W when X = X_ref.
    Quantizing W' with H minimises ||X Q^T - X_ref W^T||^2 (up to the ridge), since that error is
    ||X (Q - W')^T||^2 plus a part no Q changes (GPTAQ's asymmetric calibration, Li et al., 2025)."""
    H = hessian.double()
    lam = damp * float(torch.diag(H).mean().clamp(min=1e-12))
    wt = w.detach().double().T  # [K, N]
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    return torch.linalg.solve(H + lam * eye, cross.double() @ wt + lam * wt).T.to(w.dtype).contiguous()
