"""Compression quality, speed and memory on SmolLM2-135M-Instruct.

Quality: compress with each method (calibration: lee_background, the default), evaluate each on the
`evaluate` package's perplexity protocol (float32) against P0, the source itself, on two texts that
calibration never reads: the Wikipedia excerpt (another corpus: the targets are judged on it) and the
segments of lee_background that calibration leaves out (the same corpus). Report ratios and the share
of RTN's gap to P0 that GPTQ / AWQ close, per text. Each variant is compressed in a fresh subprocess, so
its peak host memory is its own. Results are written after every variant; `--resume` skips the
variants already in `--out`.

Speed and memory (`--speed`, or `--speed-only` for the checkpoints already listed in `--out`): the source
in bf16 and every variant that the engine loads, each in a fresh subprocess with `--threads` threads
and bf16 activations: the model's bytes in memory (`evaluate.footprint.memory_size`, KV cache excluded)
against the source's float32 bytes, batch-1 decode tok/s (`evaluate.speed`: 128-token prompt, 64 greedy
tokens, median of 3) and the output tok/s of 32 requests at once (prompts 64-256 tokens, 64 output
tokens). `--rounds` repeats the whole sweep, models interleaved, and the median per model is reported,
so a slow spell on a shared machine does not land on one model only.

    python benchmarks/compression.py --out benchmarks/results/compression.json --group-size 64
    python benchmarks/compression.py --out benchmarks/results/compression.json --speed-only --rounds 3
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = {  # variant -> (kind, bound, RTN variant for gap closure)
    "int8-rtn": ("ratio_max", 1.01, None),
    "w4-gptq": ("closes_min", 0.60, "w4-rtn"),
    "w4-awq": ("closes_min", 0.50, "w4-rtn"),
    "w3-gptq": ("closes_min", 0.80, "w3-rtn"),
    "w4-gptq-plain": ("closes_min", 0.60, "w4-rtn"),
    "w4-gptq-nosink": ("closes_min", 0.60, "w4-rtn"),
    "sp50-sparsegpt": ("ratio_max", 1.35, None),
    "sp50-wanda": ("ratio_max", 1.45, None),
    "2:4-sparsegpt": ("ratio_max", 2.2, None),
}


def variants(group: int) -> dict[str, dict[str, Any]]:
    """Recipe (without calibration) of every variant; 4- and 3-bit use symmetric groups of `group`. GPTQ
    runs with its defaults (act-order, MSE range search weighted by the Hessian diagonal, sink weight 64).
    The other GPTQ rows search unweighted (hessian_mse off, the defaults before 2026-12-03): `-nohmse`
    only that; `-nosink`: sink weight 1 (the reference tools' settings); `-plain`: act-order off and sink
    weight 1 (the defaults before 2026-12-02); `-fp`: fp_target (fit the uncompressed layer outputs);
    `-damp`: damping 0.1."""
    q = {"bits": 4, "group_size": group, "symmetric": True}
    q3 = {**q, "bits": 3}
    best: dict[str, Any] = {}
    old = {"hessian_mse": False}
    return {
        "int8-rtn": {"quantize": {"method": "rtn", "bits": 8, "group_size": -1}},
        "w4-rtn": {"quantize": {"method": "rtn", **q}},
        "w4-gptq": {"quantize": {"method": "gptq", **q, **best}},
        "w4-awq": {"quantize": {"method": "awq", **q}},
        "w3-rtn": {"quantize": {"method": "rtn", **q3}},
        "w3-gptq": {"quantize": {"method": "gptq", **q3, **best}},
        "sp50-magnitude": {"prune": {"method": "magnitude", "sparsity": 0.5}},
        "sp50-wanda": {"prune": {"method": "wanda", "sparsity": 0.5}},
        "sp50-sparsegpt": {"prune": {"method": "sparsegpt", "sparsity": 0.5}},
        "2:4-sparsegpt": {"prune": {"method": "sparsegpt", "pattern": "2:4"}},
        "w8a8-smoothquant": {"quantize": {"method": "smoothquant"}},
        "w4-gptq-nosink": {"quantize": {"method": "gptq", **q, **old, "sink_weight": 1.0}},
        "w4-gptq-plain": {"quantize": {"method": "gptq", **q, **old, "act_order": False, "sink_weight": 1.0}},
        "w4-gptq-fp": {"quantize": {"method": "gptq", **q, **old, "fp_target": True}},
        "w4-gptq-fp-damp": {"quantize": {"method": "gptq", **q, **old, "fp_target": True, "damp": 0.1}},
        "w3-gptq-fp": {"quantize": {"method": "gptq", **q3, **old, "fp_target": True}},
        "w4-gptq-nohmse": {"quantize": {"method": "gptq", **q, **old}},
        "w3-gptq-nohmse": {"quantize": {"method": "gptq", **q3, **old}},
        # embeddings and (tied) lm_head quantized too (RTN), for the memory targets
        "int8-rtn-all": {"quantize": {"method": "rtn", "bits": 8, "group_size": -1}, "skip": []},
        "w4-rtn-all": {"quantize": {"method": "rtn", **q}, "skip": []},
        "w4-gptq-all": {"quantize": {"method": "gptq", **q, **old}, "skip": []},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF directory (default: the embedded SmolLM2)")
    p.add_argument("--out", default=None, help="JSON results file (default: stdout only)")
    p.add_argument("--work-dir", default=None, help="where the checkpoints go (default: a temporary directory)")
    p.add_argument("--only", nargs="*", default=None, help="variant names to run and time (default: all)")
    p.add_argument("--group-size", type=int, default=64, help="group size of the 4- and 3-bit variants")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--speed", action="store_true", help="also time decode and throughput through the engine")
    p.add_argument("--speed-only", action="store_true", help="only the speed part, on the checkpoints in --out")
    p.add_argument("--rounds", type=int, default=3, help="speed sweeps (median per model)")
    p.add_argument("--threads", type=int, default=None, help="engine threads for the speed part")
    p.add_argument("--resume", action="store_true", help="keep the variants already in --out")
    p.add_argument("--markdown", action="store_true", help="only print the tables of --out as Markdown")
    return p


def _compress_one(model: str | None, recipe: dict, out: str, reference: dict) -> dict[str, Any]:
    """In a subprocess: compress, evaluate against the given reference, return the figures."""
    from neutrino.compression.api import compress
    from neutrino.compression.evaluate.result import EvalResult

    start = time.perf_counter()
    result = compress(model, recipe, out, overwrite=True, reference=EvalResult.from_dict(reference),
                      eval_tasks=EVAL_TASKS, progress=False)
    a = result.assessment
    return {"recipe": recipe, "ppl": {t: a.result.ppl(t) for t in TEXTS}, "eval_mode": a.mode,
            "fallback_reason": a.reason,
            "sparsity": result.sparsity, "seconds": {**result.seconds, "wall": time.perf_counter() - start},
            "peak_rss_mib": result.peak_rss_bytes / 2**20,
            "compress_peak_rss_mib": _compress_peak_mib({"checkpoint": out, "peak_rss_mib": 0}), "disk_mib": a.result.footprint.disk_bytes / 2**20,
            "checkpoint": out}


EVAL_TASKS = "ppl-wiki,ppl-lee"
TEXTS = ("wiki", "lee")  # the first one judges the targets
TEXT_NAMES = {"wiki": "Wikipedia excerpt (held-out corpus)",
              "lee": "lee_background segments left out of calibration (same corpus)"}
SPEED_TARGETS = {"int8": (1.5, 0.3), "int4": (2.0, 0.2)}  # decode vs bf16 at least, memory vs fp32 at most


def _speed(path: str, threads: int | None) -> dict[str, Any]:
    """In a subprocess: memory bytes, batch-1 decode tok/s and 32-request output tok/s through the
    engine in bf16, or the reason it could not load."""
    from neutrino import LLM, SamplingParams
    from neutrino.bench.workload import make_prompts
    from neutrino.compression.evaluate.footprint import memory_size
    from neutrino.compression.evaluate.speed import measure_speed
    from neutrino.errors import NeutrinoError

    try:
        llm = LLM(model=path, dtype="bfloat16", enable_prefix_caching=False, num_threads=threads)
    except (NeutrinoError, KeyError, RuntimeError, ValueError) as e:
        return {"skipped": f"the engine cannot load it: {type(e).__name__}: {e}"}
    memory = memory_size(llm.engine.runner.model)
    decode = measure_speed(llm, prefill_len=16, decode_prompt_len=128, decode_len=64, repeats=3).decode_tok_s
    prompts = make_prompts(llm.tokenizer, 32, 64, 256, seed=0)
    params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    return {"memory_bytes": memory, "batch1_decode_tok_s": decode,
            "throughput_32_output_tok_s": sum(len(o.outputs[0].token_ids) for o in outs) / elapsed}


def _fp32_bytes(source: Path) -> int:
    """Float32 bytes of every tensor of the source checkpoint (a tied table counted once)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(source.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            total += sum(4 * math.prod(st.get_slice(key).get_shape()) for key in st.keys())
    return total


def speed_table(data: dict[str, Any], source: Path, rounds: int, threads: int | None,
                only: list[str] | None = None) -> dict[str, Any]:
    """Memory and speed of the source (bf16) and of every variant's checkpoint (those in `only` when
    given), `rounds` interleaved sweeps, medians; ratios to bf16 decode and to fp32 bytes, with the
    speed targets' verdicts."""
    models = {"bf16": str(source)}
    models.update({name: r["checkpoint"] for name, r in data.get("variants", {}).items()
                   if Path(r["checkpoint"]).exists() and (only is None or name in only)})
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    for i in range(rounds):
        for name, path in models.items():
            with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                samples[name].append(pool.submit(_speed, path, threads).result())
            print(f"speed round {i + 1}/{rounds} {name}: {samples[name][-1]}", file=sys.stderr, flush=True)
    fp32 = _fp32_bytes(source)
    table: dict[str, Any] = {}
    for name, runs in samples.items():
        if "skipped" in runs[0]:
            table[name] = runs[0]
            continue
        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        row["decode_samples"] = [r["batch1_decode_tok_s"] for r in runs]
        row["memory_vs_fp32"] = row["memory_bytes"] / fp32
        table[name] = row
    base = table["bf16"]["batch1_decode_tok_s"]
    for name, row in table.items():
        if "skipped" in row:
            continue
        row["decode_vs_bf16"] = row["batch1_decode_tok_s"] / base
        row["throughput_vs_bf16"] = row["throughput_32_output_tok_s"] / table["bf16"]["throughput_32_output_tok_s"]
        bits = data.get("variants", {}).get(name, {}).get("recipe", {}).get("quantize", {}).get("bits")
        kind = {8: "int8", 4: "int4"}.get(bits) if "w8a8" not in name else None
        if kind:
            speed_min, mem_max = SPEED_TARGETS[kind]
            row["targets"] = {"decode_vs_bf16": {"bound": speed_min, "met": row["decode_vs_bf16"] >= speed_min},
                              "memory_vs_fp32": {"bound": mem_max, "met": row["memory_vs_fp32"] <= mem_max}}
    return {"fp32_bytes": fp32, "threads": threads, "rounds": rounds, "models": table}


def _ppl(r: dict[str, Any]) -> dict[str, float]:
    return r["ppl"] if isinstance(r["ppl"], dict) else {"lee": r["ppl"]}  # results before 2026-12-02: lee only


def summarize(results: dict[str, Any], p0: dict[str, float]) -> dict[str, Any]:
    """Per-variant and per-text ratio to P0 and gap closed versus RTN; each quality target's verdict on
    the first text of TEXTS that was measured."""
    out = {}
    for name, r in results.items():
        ppl = _ppl(r)
        kind, bound, rtn = TARGETS.get(name, (None, None, None))
        row: dict[str, Any] = {"ppl": ppl, "ratio": {t: v / p0[t] for t, v in ppl.items() if v and p0.get(t)}}
        if rtn and rtn in results:
            base = _ppl(results[rtn])
            row["gap_closed"] = {t: (base[t] - v) / (base[t] - p0[t]) for t, v in ppl.items()
                                 if v and base.get(t) and base[t] > p0[t]}
        judged = next((t for t in TEXTS if t in row["ratio"]), None)
        if kind and judged:
            value = row["ratio"][judged] if kind == "ratio_max" else row.get("gap_closed", {}).get(judged)
            ok = value is not None and (value <= bound if kind == "ratio_max" else value >= bound)
            row["target"] = {"kind": kind, "bound": bound, "met": ok, "text": judged}
        out[name] = row
    return out


def run(ns: argparse.Namespace) -> dict[str, Any]:
    from neutrino.compression.assess import evaluate_source
    from neutrino.weights.resolve import resolve_model

    source = resolve_model(ns.model).path
    data: dict[str, Any] = {}
    if ns.resume and ns.out and Path(ns.out).exists():
        data = json.loads(Path(ns.out).read_text())
    if "reference" not in data:
        ref = evaluate_source(source, f"{source.name} (source)", EVAL_TASKS, progress=False)
        data["reference"] = ref.to_dict()
    p0 = {t: v["ppl"] for t, v in data["reference"]["perplexity"].items()}
    calib = {"samples": ns.calib_samples, "seq_len": ns.calib_len}
    data.update(p0=p0, texts={t: TEXT_NAMES[t] for t in p0}, group_size=ns.group_size, calibration=calib,
                protocol=data["reference"]["protocol"])
    results = data.setdefault("variants", {})
    work = Path(ns.work_dir or tempfile.mkdtemp(prefix="neutrino-compression-bench-"))
    for name, recipe in variants(ns.group_size).items():
        if ns.speed_only or (ns.only is not None and name not in ns.only) or name in results:
            continue
        recipe = {**recipe, "calibration": calib}
        out = str(work / name.replace(":", "of"))
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            results[name] = pool.submit(_compress_one, ns.model, recipe, out, data["reference"]).result()
        data["summary"] = summarize(results, p0)
        _write(data, ns.out)
        print(f"{name}: ppl {results[name]['ppl']} (P0 {p0})", file=sys.stderr, flush=True)
    data["summary"] = summarize(results, p0)
    if ns.speed or ns.speed_only:
        data["speed"] = speed_table(data, source, ns.rounds, ns.threads, ns.only)
        _write(data, ns.out)
    return data


QUALITY_ROWS = ["int8-rtn", "int8-rtn-all", "w8a8-smoothquant", "w4-rtn", "w4-rtn-all", "w4-gptq", "w4-gptq-all",
                "w4-gptq-nosink", "w4-gptq-plain", "w4-awq", "w3-rtn", "w3-gptq", "sp50-magnitude", "sp50-wanda",
                "sp50-sparsegpt", "2:4-sparsegpt"]


def _compress_peak_mib(v: dict[str, Any]) -> float:
    """Peak RSS of the compression itself (recipe.yaml's, taken before the evaluation), else the
    whole subprocess's."""
    import yaml

    recipe = Path(v["checkpoint"]) / "recipe.yaml"
    if recipe.exists():
        return float(yaml.safe_load(recipe.read_text())["produced"]["peak_rss_mib"])
    return float(v["peak_rss_mib"])


def markdown(data: dict[str, Any]) -> str:
    """The quality table (and the speed/memory table when measured) as Markdown, for RESULTS.md."""
    p0 = data["p0"] if isinstance(data["p0"], dict) else {"lee": data["p0"]}
    texts = [t for t in TEXTS if t in p0]
    head = " | ".join(f"ppl {t} (P0 {p0[t]:.2f}) | x P0 | RTN gap closed" for t in texts)
    lines = [f"| variant | {head} | target | compress time | peak RSS (compress) |",
             "|---|" + "---|---|---|" * len(texts) + "---|---|---|"]
    summary, variants_ = summarize(data["variants"], p0), data["variants"]  # old files: floats in summary
    for name in [n for n in QUALITY_ROWS if n in summary] + [n for n in summary if n not in QUALITY_ROWS]:
        row, v = summary[name], variants_[name]
        cells = []
        for t in texts:
            ppl, ratio, gap = row["ppl"].get(t), row["ratio"].get(t), row.get("gap_closed", {}).get(t)
            cells.append(f"{ppl:.2f} | {ratio:.3f}" if ppl else " | ")
            cells.append(f"{gap:.0%}" if gap is not None else "")
        target = ""
        if "target" in row:
            t = row["target"]
            bound = f"<= {t['bound']}x" if t["kind"] == "ratio_max" else f">= {t['bound']:.0%} closed"
            target = f"{bound} ({t['text']}): {'met' if t['met'] else '**not met**'}"
        lines.append(f"| {name} | {' | '.join(cells)} | {target} | "
                     f"{v['seconds']['compress']:.0f} s | {_compress_peak_mib(v):.0f} MiB |")
    speed = data.get("speed")
    if speed:
        lines += ["", f"Speed and memory ({speed['rounds']} interleaved rounds, medians; threads: "
                  f"{speed['threads'] or 'default'}; fp32 bytes {speed['fp32_bytes'] / 2**20:.1f} MiB):", "",
                  "| model | memory | x fp32 | batch-1 decode | x bf16 | 32-request output tok/s | x bf16 | targets |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in speed["models"].items():
            if "skipped" in r:
                lines.append(f"| {name} | {r['skipped']} | | | | | | |")
                continue
            targets = "; ".join(f"{k.split('_vs_')[0]} {'met' if t['met'] else '**not met**'}"
                                for k, t in r.get("targets", {}).items())
            lines.append(f"| {name} | {r['memory_bytes'] / 2**20:.1f} MiB | {r['memory_vs_fp32']:.3f} | "
                         f"{r['batch1_decode_tok_s']:.1f} tok/s | {r['decode_vs_bf16']:.2f} | "
                         f"{r['throughput_32_output_tok_s']:.1f} | {r['throughput_vs_bf16']:.2f} | {targets} |")
    return "\n".join(lines) + "\n"


def _write(data: dict[str, Any], out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.markdown:
        print(markdown(json.loads(Path(ns.out).read_text())), end="")
        return 0
    data = run(ns)
    _write(data, ns.out)
    print(json.dumps({"summary": data["summary"], "speed": data.get("speed")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
