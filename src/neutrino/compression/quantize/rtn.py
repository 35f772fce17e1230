"""Round-to-nearest (RTN) weight quantization, per output channel or per group, optionally with a
per-group scaling of the range (AWQ's clip search chooses it)."""

from __future__ import annotations

import torch

from neutrino.compression.quantize.grid import QuantGrid, QuantizedWeight


def quantize_rtn(w: torch.Tensor, grid: QuantGrid, clip: torch.Tensor | None = None) -> QuantizedWeight:
    """Quantize a [N, K] weight to the nearest grid point; `clip` [N, G] scales each group's range
    (below 1: values beyond it saturate; see `QuantGrid.range_ratios`)."""
    n, k = w.shape
    g = grid.groups(k)
    wg = w.float().reshape(n, g, k // g)
    scale, zero = grid.params(wg * clip[..., None] if clip is not None else wg)
    codes = grid.codes(wg, scale[..., None], zero[..., None]).reshape(n, k)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, grid)


def fake_quantize(w: torch.Tensor, grid: QuantGrid, clip: torch.Tensor | None = None) -> torch.Tensor:
    """RTN quantize-dequantize of a [N, K] weight (float32)."""
    return quantize_rtn(w, grid, clip).dequantize()
