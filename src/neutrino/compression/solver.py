"""`LayerCompressor`: applies a recipe to a decoder layer from its input statistics: group by group
(prune, then quantize each group's linears) or, for AWQ / SmoothQuant, the whole layer at once (prune
every linear -> fold input scales -> quantize every linear). The compressed
layer keeps dense float32 weights equal to the dequantized codes, so the next layer is calibrated on
the compressed model's activations; the codes themselves are kept in `CompressionState`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neutrino.compression.arch import GROUPS, Group, can_fold, fold_scales
from neutrino.compression.hessian import output_target
from neutrino.compression.prune.magnitude import magnitude_prune
from neutrino.compression.prune.sparsegpt import sparsegpt_prune
from neutrino.compression.prune.wanda import wanda_prune
from neutrino.compression.quantize.awq import search_clip, search_scales
from neutrino.compression.quantize.gptq import gptq_quantize
from neutrino.compression.quantize.grid import QuantGrid, QuantizedWeight
from neutrino.compression.quantize.rtn import quantize_rtn
from neutrino.compression.quantize.smoothquant import smooth_scales
from neutrino.compression.recipe import Recipe
from neutrino.compression.stats import InputStats, StatsSpec

NO_CLIP = ("self_attn.q_proj", "self_attn.k_proj")  # AWQ's reference skips the clip search for these
FOLDING = ("awq", "smoothquant")


@dataclass
class CompressionState:
    """What compression produced: codes per quantized module, zeros per pruned module, method details."""

    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)
    pruned: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (zeros, numel)
    details: dict[str, Any] = field(default_factory=dict)

    def sparsity(self) -> float | None:
        """Achieved fraction of zeros over the pruned modules."""
        if not self.pruned:
            return None
        return sum(z for z, _ in self.pruned.values()) / sum(n for _, n in self.pruned.values())


class LayerCompressor:
    """The `layerwise.LayerSolver` of a recipe; `skip(name)` says whether the HF module `name` is left
    alone."""

    def __init__(self, recipe: Recipe, skip: Callable[[str], bool]) -> None:
        self.recipe = recipe
        self.skip = skip
        self.quant = recipe.quantize.resolved() if recipe.quantize is not None else None
        self.grid = None
        if self.quant is not None:
            asym_sparse = recipe.prune is not None and not self.quant.symmetric
            self.grid = QuantGrid(self.quant.bits, self.quant.group_size, self.quant.symmetric, asym_sparse)
        self.state = CompressionState()

    def spec(self) -> StatsSpec:
        """The statistics this recipe's methods need."""
        q = self.quant.method if self.quant else None
        p = self.recipe.prune.method if self.recipe.prune else None
        rows = self.quant.max_rows if q == "awq" and self.quant else 0
        gptq = self.quant if q == "gptq" else None
        return StatsSpec(hessian=q == "gptq" or p == "sparsegpt", max_rows=rows,
                         sink_weight=gptq.sink_weight if gptq else 1.0, cross=bool(gptq and gptq.fp_target))

    @property
    def sequential(self) -> bool:
        """Group by group, except when scales are folded into earlier linears (AWQ, SmoothQuant)."""
        return self.quant is None or self.quant.method not in FOLDING

    def solve_layer(self, index: int, layer: nn.Module, stats: dict[str, InputStats] | None) -> None:
        """All groups from one set of statistics: prune all -> fold scales (AWQ/SmoothQuant) -> quantize all."""
        names = _names(index)
        masks: dict[str, torch.Tensor] = {}
        for group in GROUPS:
            masks.update(self._prune_group(layer, group, _get(stats, group), names))
        if self.quant is not None and self.quant.method in FOLDING:
            for group in GROUPS:
                self._smooth(index, layer, group, _get(stats, group), names)
        for group in GROUPS:
            self._quantize_group(layer, group, _get(stats, group), names, masks)

    def solve_group(self, index: int, layer: nn.Module, group: Group, stats: InputStats) -> None:
        """One group from its own statistics: prune, then quantize its linears."""
        names = _names(index)
        masks = self._prune_group(layer, group, stats, names)
        self._quantize_group(layer, group, stats, names, masks)

    def _prune_group(self, layer: nn.Module, group: Group, stats: InputStats | None,
                     names: dict[str, str]) -> dict[str, torch.Tensor]:
        if self.recipe.prune is None:
            return {}
        return {rel: self._prune(layer.get_submodule(rel), stats) for rel in group.linears
                if not self.skip(names[rel])}

    def _quantize_group(self, layer: nn.Module, group: Group, stats: InputStats | None, names: dict[str, str],
                        masks: dict[str, torch.Tensor]) -> None:
        for rel in group.linears:
            if self.quant is not None and not self.skip(names[rel]):
                qw = self._quantize(rel, layer.get_submodule(rel), stats, masks.get(rel))
                self.state.quantized[names[rel]] = qw
            if rel in masks:
                w = layer.get_submodule(rel).weight
                self.state.pruned[names[rel]] = (int((w == 0).sum()), w.numel())

    def finish(self, model: nn.Module) -> None:
        """After the decoder layers: round-to-nearest quantization of lm_head when it is not skipped."""
        if self.quant is None or self.skip("lm_head"):
            return
        head = model.get_output_embeddings()
        weight = head.weight.detach().clone()  # untie from the embeddings
        qw = quantize_rtn(weight, self.grid)
        head.weight = nn.Parameter(qw.dequantize(), requires_grad=False)
        self.state.quantized["lm_head"] = qw
        self.state.details["lm_head"] = "rtn"

    @torch.no_grad()
    def _prune(self, lin: nn.Linear, stats: InputStats | None) -> torch.Tensor:
        p = self.recipe.prune
        assert p is not None
        target, nm = p.target(), p.nm()
        if p.method == "magnitude":
            w, mask = magnitude_prune(lin.weight, target, nm)
        elif p.method == "wanda":
            w, mask = wanda_prune(lin.weight, _need(stats).sq_sum, target, nm)
        else:
            w, mask = sparsegpt_prune(lin.weight, _need(stats).hessian, target, nm, p.damp, p.block_size)
        lin.weight.copy_(w)
        return mask

    @torch.no_grad()
    def _smooth(self, index: int, layer: nn.Module, group: Group, stats: InputStats | None,
                names: dict[str, str]) -> None:
        q, st = self.quant, _need(stats)
        assert q is not None and self.grid is not None
        active = [rel for rel in group.linears if not self.skip(names[rel])]
        if not active or not can_fold(layer, group):
            return
        weights = [layer.get_submodule(rel).weight for rel in (active if q.method == "awq" else group.linears)]
        if q.method == "awq":
            s, alpha = search_scales(st.rows, st.mean_abs, weights, self.grid, q.grid)
            self.state.details.setdefault("awq_alpha", {})[f"model.layers.{index}.{group.prev}"] = alpha
        else:
            s = smooth_scales(st.abs_max, weights, q.alpha)
        fold_scales(layer, group, s)
        st.scale_inputs(s)

    @torch.no_grad()
    def _quantize(self, rel: str, lin: nn.Linear, stats: InputStats | None,
                  mask: torch.Tensor | None) -> QuantizedWeight:
        q, grid = self.quant, self.grid
        assert q is not None and grid is not None
        if q.method == "gptq":
            st = _need(stats)
            w = output_target(lin.weight, st.hessian, st.cross_hessian, q.damp) if q.fp_target else lin.weight
            if mask is not None:
                w = w.masked_fill(mask, 0.0)
            qw = gptq_quantize(w, st.hessian, grid, q.damp, q.block_size, q.act_order, mask, q.mse, q.hessian_mse)
        elif q.method == "awq" and q.clip and rel not in NO_CLIP:
            qw = quantize_rtn(lin.weight, grid, search_clip(lin.weight, _need(stats).rows, grid))
        else:
            qw = quantize_rtn(lin.weight, grid)
        lin.weight.copy_(qw.dequantize())
        return qw


def _names(index: int) -> dict[str, str]:
    return {rel: f"model.layers.{index}.{rel}" for g in GROUPS for rel in g.linears}


def _get(stats: dict[str, InputStats] | None, group: Group) -> InputStats | None:
    return None if stats is None else stats[group.prev]


def _need(stats: InputStats | None) -> InputStats:
    assert stats is not None, "this method needs calibration statistics"
    return stats
