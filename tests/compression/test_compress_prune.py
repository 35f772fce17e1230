"""Pruning: magnitude, Wanda and SparseGPT hit the exact target counts and the N:M pattern; SparseGPT's
weight update beats Wanda's mask-only pruning on the layer-output error."""

from __future__ import annotations

import pytest
import torch

from neutrino.compression.prune.magnitude import magnitude_prune
from neutrino.compression.prune.masks import count
from neutrino.compression.prune.sparsegpt import sparsegpt_prune
from neutrino.compression.prune.wanda import wanda_prune
from neutrino.errors import ConfigError

N, K = 48, 320  # K not a multiple of SparseGPT's 128-column block


@pytest.fixture(scope="module")
def layer() -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [N, K] and the Hessian of correlated inputs with uneven channel scales."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=g)
    x = torch.randn(2048, K, generator=g) @ (torch.eye(K) + torch.randn(K, K, generator=g) / K**0.5)
    x = x * torch.rand(K, generator=g) * 4
    return w, 2.0 / x.shape[0] * x.T @ x


def _prune(method: str, w, h, sparsity, nm=None):
    if method == "magnitude":
        return magnitude_prune(w, sparsity, nm)
    if method == "wanda":
        return wanda_prune(w, torch.diag(h) * 1024, sparsity, nm)
    return sparsegpt_prune(w, h, sparsity, nm)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.5, 0.3, 0.0])
def test_unstructured_exact_sparsity(layer, method: str, sparsity: float) -> None:
    w, h = layer
    pruned, mask = _prune(method, w, h, sparsity)
    expected = count(sparsity, N * K) if method == "magnitude" else N * count(sparsity, K)
    assert int(mask.sum()) == expected
    assert int((pruned == 0).sum()) == expected  # the weights had no zeros before
    assert bool((pruned[mask] == 0).all())
    if method != "magnitude":
        assert (mask.sum(1) == count(sparsity, K)).all()  # per output row


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_n_of_m_pattern(layer, method: str, n: int, m: int) -> None:
    w, h = layer
    pruned, mask = _prune(method, w, h, (m - n) / m, (n, m))
    assert bool((mask.view(N, K // m, m).sum(-1) == m - n).all())
    assert bool(((pruned != 0).view(N, K // m, m).sum(-1) <= n).all())


def test_pattern_must_divide(layer) -> None:
    w, h = layer
    with pytest.raises(ConfigError, match="M=6 does not divide in_features 320"):
        magnitude_prune(w, 0.5, (2, 6))


def test_sparsegpt_update_beats_mask_only(layer) -> None:
    w, h = layer

    def err(q):
        d = (w - q).double()
        return float(torch.einsum("nk,kl,nl->", d, h.double(), d))

    for nm in (None, (2, 4)):
        sgpt, _ = sparsegpt_prune(w, h, 0.5, nm)
        wanda, _ = wanda_prune(w, torch.diag(h), 0.5, nm)
        mag, _ = magnitude_prune(w, 0.5, nm)
        assert err(sgpt) < 0.9 * err(wanda) and err(wanda) < err(mag)
