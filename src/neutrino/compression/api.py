"""`compress(model, recipe, out)`: the Python entry point of `neutrino compress`.

Steps: resolve and check the source and the output path; load the model in float32; check the recipe
against its layers (skip names, group sizes, N:M blocks); cut the calibration batch (when a method
needs one); compress layer by layer; write the checkpoint into a temporary directory next to `out`;
evaluate it against the source (optional) and write the report there; move it into place."""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neutrino.compression import export
from neutrino.compression.arch import check_architecture, iter_linears
from neutrino.compression.calibration import CalibrationData, calibration_batch
from neutrino.compression.layerwise import load_model, run_layerwise
from neutrino.compression.prune.masks import check_nm
from neutrino.compression.quantize.grid import QuantGrid, QuantizedWeight
from neutrino.compression.quantize.rtn import quantize_rtn
from neutrino.compression.recipe import Recipe
from neutrino.compression.solver import CompressionState, LayerCompressor
from neutrino.errors import ConfigError
from neutrino.layers.quant.config import QuantConfig

logger = logging.getLogger(__name__)
EMBEDDINGS = "model.embed_tokens"


@dataclass
class CompressResult:
    """What `compress` did: the output directory, the recipe, timings, peak host memory, evaluation."""

    out: Path
    recipe: Recipe
    quant_config: QuantConfig | None
    sparsity: float | None
    seconds: dict[str, float]
    peak_rss_bytes: int
    assessment: Any = None  # assess.Assessment when evaluated


def compress(model: str | os.PathLike[str] | None, recipe: Recipe | dict | str | os.PathLike[str],
             out: str | os.PathLike[str], *, overwrite: bool = False, evaluate: bool = True,
             eval_tasks: str | None = None, eval_limits: Any = None, reference: Any = None,
             progress: bool = True) -> CompressResult:
    """Compress `model` (an HF directory, or None/"default" for the embedded SmolLM2) with `recipe` (a
    Recipe, a dict in the YAML form, or a YAML path) into the new directory `out`. The result is
    evaluated against the source with `eval_tasks` (default ppl-wiki,ppl-lee) under `eval_limits` (an
    `evaluate.EvalLimits`; None: the protocol's defaults); `reference` reuses an earlier EvalResult
    of the source."""
    recipe = _as_recipe(recipe)
    source, target, config, name = _check_inputs(model, out, overwrite)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    net = load_model(source, progress)
    skip = skip_matcher(recipe.skip)
    recipe = with_default_group_size(net, recipe, skip)
    check_recipe_fits(net, recipe, skip)
    calib = _calibration(source, recipe, config) if recipe.needs_calibration else None
    times["load"] = time.perf_counter() - t0
    table, tied = quantize_embeddings(net, recipe, skip, bool(config.get("tie_word_embeddings", False)))
    compressor = LayerCompressor(recipe, lambda n: skip(n) or (tied and table is not None and n == "lm_head"))
    if table is not None:
        compressor.state.quantized[EMBEDDINGS] = table
        compressor.state.details[EMBEDDINGS] = "rtn" + (" (tied: also lm_head)" if tied else "")
    run_layerwise(net, None if calib is None else calib.input_ids, compressor, compressor.spec(), progress)
    compressor.finish(net)
    times["compress"] = time.perf_counter() - t0 - times["load"]
    state = compressor.state
    qc, sparsity = _configs(recipe, state, calib)
    tmp = export.temp_dir_for(target)
    try:
        text = _recipe_text(recipe, source, calib, state, times)
        export.write_checkpoint(net, source, tmp, state.quantized, qc, sparsity, text, tied)
        del net, compressor, state
        assessment = None
        if evaluate:
            t1 = time.perf_counter()
            assessment = _assess(source, tmp, target, name, eval_tasks, eval_limits, reference, progress)
            times["evaluate"] = time.perf_counter() - t1
        export.check_output(source, target, overwrite)  # again: --out may have appeared meanwhile
        export.publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CompressResult(target, recipe, qc, None if sparsity is None else sparsity["achieved"], times,
                          peak_rss_bytes(), assessment)


def _check_inputs(model: str | os.PathLike[str] | None, out: str | os.PathLike[str], overwrite: bool
                  ) -> tuple[Path, Path, dict[str, Any], str]:
    """(source dir, absolute output path, source config.json, model name), or a typed error."""
    from neutrino.weights.resolve import resolve_model

    resolved = resolve_model(model)
    if resolved.format != "hf":
        raise ConfigError(f"compress needs an HF checkpoint directory, got the GGUF file {resolved.path}")
    source, target = resolved.path, Path(out).expanduser().absolute()
    export.check_output(source, target, overwrite)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    check_architecture(config)
    if "quantization_config" in config:
        raise ConfigError(f"{source} is already quantized ({config['quantization_config'].get('quant_method')})")
    return source, target, config, resolved.name


def _assess(source: Path, tmp: Path, target: Path, name: str, tasks: str | None, limits: Any, reference: Any,
            progress: bool) -> Any:
    from neutrino.compression.assess import DEFAULT_EVAL_TASKS, Q4_1_NOTE, assess

    notes = [Q4_1_NOTE] if name.startswith("SmolLM2") else []
    return assess(source, tmp, target.name, tasks or DEFAULT_EVAL_TASKS, reference, progress, notes,
                  final=target, limits=limits)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def skip_matcher(skip: tuple[str, ...]):
    """`skip(name)`: HF module `name` is left alone (`QuantConfig.is_ignored` rules: the name itself or a
    dotted suffix of it, e.g. `lm_head`, `mlp.down_proj`, `layers.0.self_attn.q_proj`)."""
    names = tuple(skip)

    def matches(module: str) -> bool:
        return any(module == s or module.endswith("." + s) for s in names)

    return matches


def _quantized_widths(model: Any, recipe: Recipe, skip) -> list[tuple[str, int]]:
    """(name, in_features) of every layer the recipe quantizes (the embeddings: their hidden size)."""
    targets = [(n, m.in_features) for n, m in iter_linears(model) if not skip(n)]
    if recipe.quantize is not None:
        hidden = model.get_output_embeddings().weight.shape[1]
        targets += [(n, hidden) for n in ("lm_head", EMBEDDINGS) if not skip(n)]
    return targets


def with_default_group_size(model: Any, recipe: Recipe, skip) -> Recipe:
    """Fill in a group size the recipe left unset below 8 bits: 128, or the largest of 64 and 32 that
    divides every quantized layer's in_features when 128 does not (SmolLM2's hidden size 576 = 4.5 x 128).
    An explicit group size is kept as given (and checked by `check_recipe_fits`)."""
    q = recipe.quantize
    if q is None or q.group_size is not None or q.resolved().group_size == -1:
        return recipe
    widths = [k for _, k in _quantized_widths(model, recipe, skip)]
    group = next((g for g in (128, 64, 32) if all(k % g == 0 for k in widths)), 128)
    if group != 128:
        logger.info("group size 128 does not divide every layer's in_features; using %d", group)
    return replace(recipe, quantize=replace(q, group_size=group))


def check_recipe_fits(model: Any, recipe: Recipe, skip) -> None:
    """ConfigError naming the layer when a skip name matches nothing, or a group size, packing or N:M
    block does not divide a layer's in_features."""
    linears = list(iter_linears(model))
    known = [name for name, _ in linears] + ["lm_head", EMBEDDINGS]
    for entry in recipe.skip:
        if not any(n == entry or n.endswith("." + entry) for n in known):
            raise ConfigError(f"skip entry {entry!r} matches no layer of the model; names look like "
                              f"{linears[0][0]!r} (a suffix such as 'mlp.down_proj' matches every layer), "
                              "'lm_head' or 'model.embed_tokens'")
    for name, k in _quantized_widths(model, recipe, skip):
        try:
            if recipe.quantize is not None:
                q = recipe.quantize.resolved()
                QuantGrid(q.bits, q.group_size).groups(k)
                if q.bits < 8 and k % 2:
                    raise ConfigError(f"{q.bits}-bit codes are packed two per byte: in_features {k} is odd")
            nm = recipe.prune.nm() if recipe.prune is not None else None
            if nm is not None and name not in ("lm_head", EMBEDDINGS):
                check_nm(k, nm[1])
        except ConfigError as e:
            raise ConfigError(f"layer {name}: {e}") from None


@torch.no_grad()
def quantize_embeddings(net: Any, recipe: Recipe, skip, tied: bool) -> tuple[QuantizedWeight | None, bool]:
    """(codes of the token embeddings or None, whether the output keeps `tie_word_embeddings`).

    Unless skipped, the table is quantized round-to-nearest (GPTQ/AWQ need a linear layer's input
    statistics; a lookup table has none) with the recipe's bits, group size (along the hidden
    dimension, like lm_head's input) and symmetry, before calibration, so the decoder layers are
    calibrated on the quantized embeddings. Tied embeddings stay tied when both the table and lm_head
    are quantized (one tensor set serves both: the table's RTN codes are lm_head's) or both dense;
    otherwise lm_head is untied and quantized (`LayerCompressor.finish`) or written dense."""
    head_q = recipe.quantize is not None and not skip("lm_head")
    if recipe.quantize is None or skip(EMBEDDINGS):
        return None, tied and not head_q
    q = recipe.quantize.resolved()
    table, head = net.get_input_embeddings(), net.get_output_embeddings()
    if head.weight.data_ptr() == table.weight.data_ptr() and not (tied and head_q):
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)  # untie
    qw = quantize_rtn(table.weight.detach().float(), QuantGrid(q.bits, q.group_size, q.symmetric))
    table.weight.data.copy_(qw.dequantize())  # a head still tied to it sees the codes too
    return qw, tied and head_q


def _as_recipe(recipe: Recipe | dict | str | os.PathLike[str]) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe.validate()
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    return Recipe.from_yaml(recipe)


def _calibration(source: Path, recipe: Recipe, config: dict) -> CalibrationData:
    from transformers import AutoTokenizer

    c = recipe.calibration
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if isinstance(limit, int) and c.seq_len > limit:
        raise ConfigError(f"calibration seq_len {c.seq_len} exceeds the model's max_position_embeddings {limit}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    return calibration_batch(tokenizer, c.samples, c.seq_len, c.file)


def _configs(recipe: Recipe, state: CompressionState, calib: CalibrationData | None
             ) -> tuple[QuantConfig | None, dict[str, Any] | None]:
    sparsity = None
    if recipe.prune is not None:
        p = recipe.prune
        sparsity = {"method": p.method, "target": p.target(), "pattern": p.pattern,
                    "achieved": state.sparsity(), "layers": "decoder linear layers not skipped"}
    if recipe.quantize is None:
        return None, sparsity
    q = recipe.quantize.resolved()
    extra: dict[str, Any] = {k: v for k, v in state.details.items() if k != "awq_alpha"}
    if calib is not None:
        extra["calibration"] = calib.describe()
    if q.method == "gptq":
        extra.update(damp=q.damp, act_order=q.act_order, block_size=q.block_size, mse=q.mse,
                     sink_weight=q.sink_weight, fp_target=q.fp_target,
                     hessian_mse=q.hessian_mse)
    elif q.method == "smoothquant":
        extra["alpha"] = q.alpha
    qc = QuantConfig(bits=q.bits, group_size=q.group_size, symmetric=q.symmetric,
                     scheme="w8a8" if q.method == "smoothquant" else "weight_only", method=q.method,
                     ignore=tuple(dict.fromkeys(recipe.skip)), sparsity=sparsity, extra=extra)
    return qc, sparsity


def _recipe_text(recipe: Recipe, source: Path, calib: CalibrationData | None, state: CompressionState,
                 times: dict[str, float]) -> str:
    import yaml

    import neutrino

    info: dict[str, Any] = {"source": str(source), "neutrino": neutrino.__version__,
                            "seconds": {k: round(v, 1) for k, v in times.items()},
                            "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1)}
    if calib is not None:
        info["calibration_data"] = calib.describe()
    if state.sparsity() is not None:
        info["achieved_sparsity"] = state.sparsity()
    for key in ("lm_head", EMBEDDINGS):
        if key in state.details:
            info[key] = state.details[key] + ", whatever the recipe's method (no input statistics)"
    if "awq_alpha" in state.details:
        info["awq_alpha"] = state.details["awq_alpha"]
    return recipe.to_yaml() + yaml.safe_dump({"produced": info}, sort_keys=False)
