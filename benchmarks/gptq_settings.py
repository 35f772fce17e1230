"""GPTQ's settings one at a time on SmolLM2 (the sweep behind GPTQ's defaults; see RESULTS.md).

Each variant runs the same layer-by-layer pipeline as `neutrino compress` (transformers model in
float32, default lee_background calibration windows) on a copy of the model, then scores the
quantize-dequantized model in transformers (float32) with the `evaluate` perplexity protocol on the
Wikipedia excerpt (never calibrated on) and on the lee_background segments calibration leaves out.
`--max-tokens` caps the tokens per text (segments of 2,048). Faster than `benchmarks/compression.py`
(no checkpoint, no engine), so a sweep fits in a session; the figures are comparable within one run.

    python benchmarks/gptq_settings.py --calib-samples 32 --out sweep.json \\
        rtn gptq act_order=false,sink_weight=1 sink_weight=1 sink_weight=8 mse=true
A variant is `rtn`, `gptq` (the defaults) or comma-separated QuantizeRecipe overrides of GPTQ's defaults.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


class _Scorer:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        return self.model(torch.tensor([token_ids])).logits[0].float()


def _overrides(spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        out[key] = value == "true" if value in ("true", "false") else float(value) if "." in value or key in (
            "damp", "sink_weight") else int(value)
    return out


def run_variant(base: torch.nn.Module, spec: str, ids: torch.Tensor | None, bits: int, group: int) -> tuple[Any, float]:
    from neutrino.compression.layerwise import run_layerwise
    from neutrino.compression.recipe import QuantizeRecipe, Recipe
    from neutrino.compression.solver import LayerCompressor

    fields = {"method": "rtn"} if spec == "rtn" else {"method": "gptq", **({} if spec == "gptq" else _overrides(spec))}
    recipe = Recipe(quantize=QuantizeRecipe(bits=bits, group_size=group, **fields)).validate()
    model = copy.deepcopy(base)
    solver = LayerCompressor(recipe, lambda name: name in ("lm_head", "model.embed_tokens"))
    start = time.perf_counter()
    run_layerwise(model, ids if recipe.needs_calibration else None, solver, solver.spec(), progress=False)
    return model, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from neutrino.compression.calibration import calibration_batch
    from neutrino.compression.evaluate.datasets import lee_text, wiki_text
    from neutrino.compression.evaluate.perplexity import perplexity, text_token_ids
    from neutrino.compression.layerwise import load_model
    from neutrino.weights.resolve import resolve_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--out", default=None)
    ns = p.parse_args(argv)
    source = resolve_model(None).path
    tok = AutoTokenizer.from_pretrained(source)
    texts = {"wiki": text_token_ids(tok, wiki_text()), "lee": text_token_ids(tok, lee_text())}
    base = load_model(source, progress=False)
    ids = calibration_batch(tok, ns.calib_samples, ns.calib_len).input_ids

    def ppl(model: torch.nn.Module) -> dict[str, float]:
        return {t: perplexity(_Scorer(model), v, max_tokens=ns.max_tokens).ppl for t, v in texts.items()}

    data: dict[str, Any] = {"settings": vars(ns), "source": ppl(base), "variants": {}}
    for spec in ns.variants:
        model, seconds = run_variant(base, spec, ids, ns.bits, ns.group_size)
        data["variants"][spec] = {"ppl": ppl(model), "seconds": seconds}
        print(spec, data["variants"][spec], file=sys.stderr, flush=True)
        if ns.out:
            Path(ns.out).write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
