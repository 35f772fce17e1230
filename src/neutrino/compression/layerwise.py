"""Layer-by-layer calibration. The model is loaded once in float32 with transformers; the calibration
batch is embedded and the decoder layers are run one at a time:

1. the layer runs on its inputs (chunk by chunk) with hooks that accumulate `InputStats` for each group
   of linears reading the same input, and a solver compresses the linears from those statistics.
   Methods without folded scales (RTN, GPTQ, magnitude, Wanda, SparseGPT) go group by group in
   execution order (q/k/v, o, gate/up, down: "true sequential"), so each group is calibrated on inputs
   that already pass through the layer's compressed earlier groups (the pass stops at the group);
   AWQ and SmoothQuant take the statistics of all groups from one pass, as their scales are folded
   into earlier linears (v_proj, up_proj) before anything is quantized;
2. with `StatsSpec.cross` (GPTQ's `fp_target`) an uncompressed copy of the layer runs beside it on the
   uncompressed model's hidden states, chunk by chunk, and each group's statistics also get X^T X_ref,
   its inputs against the inputs the same linear reads in the uncompressed model;
3. the compressed layer runs again, and its outputs become the next layer's inputs, so every layer is
   calibrated on activations that already carry the earlier layers' compression error.

Host memory beyond the weights: the hidden states of the calibration batch (samples x seq_len x hidden,
float32, updated in place; twice with `cross`) plus one chunk's activations inside one layer and the statistics of one
layer (Hessians are K x K)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from neutrino.compression.arch import GROUPS, Group, decoder_layers
from neutrino.compression.stats import InputStats, StatsSpec

logger = logging.getLogger(__name__)
CHUNK_SAMPLES = 8  # calibration samples per forward pass



class LayerSolver(Protocol):
    """Compresses decoder layers: all groups at once, or (when `sequential`) one group at a time."""

    sequential: bool

    def solve_layer(self, index: int, layer: nn.Module, stats: dict[str, InputStats] | None) -> None: ...

    def solve_group(self, index: int, layer: nn.Module, group: Group, stats: InputStats) -> None: ...


class _StopForward(Exception):
    """Raised by the hook on layer 0 once its inputs are captured."""


def load_model(path: str | os.PathLike[str], progress: bool = True) -> nn.Module:
    """A transformers causal LM in float32 (SDPA attention, eval mode, no gradients)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(Path(path), dtype=torch.float32,
                                                     attn_implementation="sdpa")
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    model.eval().requires_grad_(False)
    return model


@torch.no_grad()
def capture_inputs(model: nn.Module, input_ids: torch.Tensor, chunk: int = CHUNK_SAMPLES
                   ) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Inputs of decoder layer 0 for each chunk of samples: hidden states [b, L, H] and the keyword
    arguments the model passes to its layers (position embeddings, attention mask, ...)."""
    layer0 = decoder_layers(model)[0]
    hidden: list[torch.Tensor] = []
    kwargs: list[dict[str, Any]] = []

    def hook(module: nn.Module, args: tuple, kw: dict[str, Any]) -> None:
        hidden.append((args[0] if args else kw.pop("hidden_states")).detach())
        kwargs.append({k: v for k, v in kw.items() if k not in ("hidden_states", "past_key_values",
                                                                 "past_key_value")})
        raise _StopForward

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in input_ids.split(chunk):
            try:
                model.model(input_ids=ids, use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return hidden, kwargs


Stream = tuple[nn.Module, list[torch.Tensor]]  # a layer and the hidden states it reads, chunk by chunk


def stats_for_layer(layer: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict[str, Any]],
                    spec: StatsSpec, groups: tuple[Group, ...] = GROUPS,
                    ref: Stream | None = None) -> dict[str, InputStats]:
    """Run `layer` on every chunk and return the input statistics of each of `groups`, keyed by `prev`.
    With a single group the forward pass stops at that group's first linear layer. With `ref` (the
    uncompressed layer and its hidden states) the reference runs first on each chunk and its inputs to
    the same linears are passed to `InputStats.add` beside the layer's own."""
    total = sum(h.shape[0] * h.shape[1] for h in hidden)
    stop = len(groups) == 1
    stats: dict[str, InputStats] = {}
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for group in groups:
        first = layer.get_submodule(group.linears[0])
        stats[group.prev] = InputStats(first.in_features, spec, total)
        handles.append(first.register_forward_pre_hook(_adder(stats[group.prev], stop, seen, group.prev, ref)))
        if ref is not None:
            handles.append(ref[0].get_submodule(group.linears[0]).register_forward_pre_hook(
                _keeper(seen, group.prev, stop)))
    try:
        for j, (h, kw) in enumerate(zip(hidden, kwargs, strict=True)):
            if ref is not None:
                _run(ref[0], ref[1][j], kw)
            _run(layer, h, kw)
            seen.clear()
    finally:
        for handle in handles:
            handle.remove()
    return stats


def propagate(layer: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict[str, Any]]) -> None:
    """Replace each chunk of hidden states by the (compressed) layer's output, in place."""
    for i, (h, kw) in enumerate(zip(hidden, kwargs, strict=True)):
        hidden[i] = _forward(layer, h, kw)


def run_layerwise(model: nn.Module, input_ids: torch.Tensor | None, solver: LayerSolver, spec: StatsSpec,
                  progress: bool = True) -> None:
    """Compress every decoder layer in order. Without calibration ids the layers are solved from their
    weights alone (stats None) and nothing is run. A `sequential` solver gets its groups one at a time,
    each calibrated on inputs that already pass through the layer's compressed earlier groups."""
    from tqdm import tqdm

    layers = decoder_layers(model)
    bar = tqdm(total=len(layers), desc="compress layers", unit="layer", disable=not progress)
    if input_ids is None:
        for i, layer in enumerate(layers):
            solver.solve_layer(i, layer, None)
            bar.update()
        bar.close()
        return
    bar.set_postfix_str("embedding calibration batch")
    hidden, kwargs = capture_inputs(model, input_ids)
    ref_hidden = [h.clone() for h in hidden] if spec.cross else None
    for i, layer in enumerate(layers):
        ref = (copy.deepcopy(layer), ref_hidden) if ref_hidden is not None else None
        if solver.sequential:
            for group in GROUPS:
                bar.set_postfix_str(f"calibrating + solving {group.linears[0].split('.')[-1]}")
                st = stats_for_layer(layer, hidden, kwargs, spec, (group,), ref)
                solver.solve_group(i, layer, group, st[group.prev])
        else:
            bar.set_postfix_str("calibrating")
            stats = stats_for_layer(layer, hidden, kwargs, spec, ref=ref)
            bar.set_postfix_str("solving")
            solver.solve_layer(i, layer, stats)
            del stats
        if i + 1 < len(layers):
            bar.set_postfix_str("propagating")
            propagate(layer, hidden, kwargs)
            if ref is not None:
                propagate(*ref, kwargs)
        bar.update()
    bar.close()


@torch.no_grad()
def _forward(layer: nn.Module, h: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    out = layer(h, **kw)
    return out[0] if isinstance(out, tuple) else out


def _run(layer: nn.Module, h: torch.Tensor, kw: dict[str, Any]) -> None:
    try:
        _forward(layer, h, kw)
    except _StopForward:
        pass


def _adder(stats: InputStats, stop: bool, seen: dict[str, torch.Tensor], key: str,
           ref: Stream | None) -> Callable[[nn.Module, tuple], None]:
    def hook(module: nn.Module, args: tuple) -> None:
        stats.add(args[0], seen[key] if ref is not None else None)
        if stop:
            raise _StopForward

    return hook


def _keeper(seen: dict[str, torch.Tensor], key: str, stop: bool) -> Callable[[nn.Module, tuple], None]:
    def hook(module: nn.Module, args: tuple) -> None:
        seen[key] = args[0].detach()
        if stop:
            raise _StopForward

    return hook
