"""`neutrino compress MODEL --out DIR`: quantize and/or prune a checkpoint with a recipe given by flags
or a YAML file (flags override the file), then evaluate it against the source (see the README's
"Compression" section)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from neutrino.errors import InvalidParameterError

_QUANT_FLAGS = {"bits": "bits", "group_size": "group_size", "asym": "symmetric", "damp": "damp",
                "act_order": "act_order", "mse": "mse", "sink_weight": "sink_weight",
                "fp_target": "fp_target", "hessian_mse": "hessian_mse", "alpha": "alpha"}


def register(sub: argparse._SubParsersAction) -> None:
    from neutrino.compression.recipe import PRUNE_METHODS, QUANT_METHODS

    p = sub.add_parser("compress", help="quantize and/or prune a model into a new checkpoint",
                       description=__doc__)
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="HF checkpoint directory (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist)")
    p.add_argument("--recipe", default=None, metavar="FILE.yaml", help="recipe file; flags override it")
    q = p.add_argument_group("quantization")
    q.add_argument("--method", choices=QUANT_METHODS, default=None, help="quantization method")
    q.add_argument("--bits", type=int, default=None, help="3, 4 or 8 (default 4; smoothquant 8)")
    q.add_argument("--group-size", type=int, default=None,
                   help="input weights per scale; -1 = per output channel (default: -1 at 8 bits, else 128, or 64 or 32 when 128 does not divide every layer)")
    q.add_argument("--asym", action="store_true", default=None, help="asymmetric (zero points)")
    q.add_argument("--damp", type=float, default=None, help="gptq/sparsegpt Hessian damping (default 0.01)")
    q.add_argument("--act-order", action=argparse.BooleanOptionalAction, default=None,
                   help="gptq: quantize columns by decreasing Hessian diagonal, group ranges fixed up front "
                        "(default on; --no-act-order: in column order, each group's range from the updated weights)")
    q.add_argument("--mse", action=argparse.BooleanOptionalAction, default=None,
                   help="gptq: search each group's clipping range (MSE) instead of min/max (default on)")
    q.add_argument("--sink-weight", type=float, default=None,
                   help="gptq: Hessian weight of each calibration sample's first token, the attention sink "
                        "(default 64; 1 = plain GPTQ)")
    q.add_argument("--fp-target", action=argparse.BooleanOptionalAction, default=None,
                   help="gptq: fit the uncompressed model's layer outputs, not those of the model compressed "
                        "so far (GPTAQ; about twice the calibration passes; default off)")
    q.add_argument("--hessian-mse", action=argparse.BooleanOptionalAction, default=None,
                   help="gptq: weight each column's error in the range search by its Hessian diagonal "
                        "(default off)")
    q.add_argument("--alpha", type=float, default=None, help="smoothquant migration strength (default 0.5)")
    q.add_argument("--skip", nargs="*", default=None, metavar="NAME",
                   help="modules left dense (default: lm_head model.embed_tokens); no NAME = skip none (both are then "
                        "quantized round-to-nearest)")
    pr = p.add_argument_group("pruning")
    pr.add_argument("--prune", choices=PRUNE_METHODS, default=None, help="pruning method (before quantizing)")
    pr.add_argument("--sparsity", type=float, default=None, help="fraction of zeros in [0, 1) (default 0.5)")
    pr.add_argument("--pattern", default=None, metavar="N:M", help="semi-structured pattern, e.g. 2:4")
    c = p.add_argument_group("calibration")
    c.add_argument("--calib-file", default=None, help="UTF-8 text (default: gensim's lee_background.cor)")
    c.add_argument("--calib-samples", type=int, default=None, help="number of samples (default 128)")
    c.add_argument("--calib-len", type=int, default=None, help="tokens per sample (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation against the source")
    p.add_argument("--eval-tasks", default=None,
                   help="evaluation tasks (see `neutrino eval`; default ppl-wiki,ppl-lee: the Wikipedia excerpt, "
                        "which the default calibration never reads, and the lee_background segments it leaves out)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_compress)


def recipe_from_args(ns: argparse.Namespace) -> Any:
    """The recipe: the --recipe file (if any) with every given flag applied on top."""
    from neutrino.compression.recipe import CalibrationRecipe, PruneRecipe, QuantizeRecipe, Recipe

    recipe = Recipe.from_yaml(ns.recipe) if ns.recipe else Recipe()
    quant = recipe.quantize
    q_over = {field: getattr(ns, flag) for flag, field in _QUANT_FLAGS.items()
              if getattr(ns, flag, None) is not None}
    if "symmetric" in q_over:
        q_over["symmetric"] = not q_over["symmetric"]
    if ns.method is not None:
        quant = replace(quant or QuantizeRecipe(), method=ns.method)
    elif set(q_over) - {"damp"} and quant is None:
        quant = QuantizeRecipe()  # --bits without --method: round-to-nearest
    if quant is not None:
        quant = replace(quant, **q_over)
    prune = recipe.prune
    if ns.prune is not None:
        prune = replace(prune or PruneRecipe(), method=ns.prune)
    p_over = {k: getattr(ns, k) for k in ("sparsity", "pattern") if getattr(ns, k) is not None}
    if p_over and prune is None:
        raise InvalidParameterError("--prune", f"{', '.join('--' + k for k in p_over)} needs a pruning method: "
                                    "--prune magnitude|wanda|sparsegpt")
    if prune is not None:
        prune = replace(prune, **p_over, **({"damp": ns.damp} if ns.damp is not None else {}))
    calib = recipe.calibration
    c_over = {"file": ns.calib_file, "samples": ns.calib_samples, "seq_len": ns.calib_len}
    calib = replace(calib, **{k: v for k, v in c_over.items() if v is not None}) if calib else CalibrationRecipe()
    skip = tuple(ns.skip) if ns.skip is not None else recipe.skip
    return Recipe(quantize=quant, prune=prune, calibration=calib, skip=skip).validate()


def run_compress(ns: argparse.Namespace) -> int:
    from neutrino.compression.api import compress

    recipe = recipe_from_args(ns)
    result = compress(ns.model, recipe, ns.out, overwrite=ns.overwrite, evaluate=not ns.no_eval,
                      eval_tasks=ns.eval_tasks, progress=not ns.no_progress)
    lines = [f"wrote {result.out}"]
    if result.sparsity is not None:
        lines.append(f"sparsity: {result.sparsity:.4f}")
    a = result.assessment
    if a is not None:
        from neutrino.compression.assess import perplexity_lines

        lines += [f"{line}; evaluated with the {a.mode}" for line in perplexity_lines(a.reference, a.result)]
    lines.append(f"time: {sum(result.seconds.values()):.0f} s, peak host memory {result.peak_rss_bytes / 2**20:.0f} MiB")
    print("\n".join(lines), file=sys.stdout)
    return 0
