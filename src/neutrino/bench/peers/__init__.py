"""Peer benchmark (`neutrino bench peers`, benchmarks/peers.py): Neutrino, vLLM's CPU backend, OpenVINO
GenAI, llama.cpp and transformers on the same workloads in one run, each engine in its own process and
each peer from its own venv or build under the peers' directory (NEUTRINO_PEERS_DIR, default
~/.cache/neutrino-peers; recipes in ../shared/PEERS.md and scripts/build_peers.sh). An engine that is
missing or fails is reported with the reason, and the run goes on.

Workloads (token-id prompts of real text, gensim's lee_background.cor; greedy; EOS ignored):
  batch1      decode tok/s at batch 1 (short prompt, --output-len tokens), median of 3 prompts
  prefill     prompt tok/s for single --prefill-len prompts (one output token), median of 3
  throughput  --num-requests requests, prompts uniform in [--min-prompt, --max-prompt], --output-len each
plus start-up (launch to engine built) and the peak resident memory of the engine's process group with
the same KV budget (--kv-cache-memory) for all. A bandwidth probe and the bytes each batch-1 token
streams (the size of the GGUF at that precision) give the share of memory bandwidth each engine reaches.
Serving at 32 clients is `neutrino bench serving` (benchmarks/serving.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neutrino.errors import ConfigError, NeutrinoError

PRECISIONS = ("fp32", "bf16", "int8", "int4")
WORKLOADS = ("batch1", "prefill", "throughput")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["neutrino", "llama.cpp", "openvino", "vllm", "transformers"],
                   help="engines to run, Neutrino first (known: neutrino, llama.cpp, openvino, vllm, transformers)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8", "int4"], choices=PRECISIONS,
                   help="bf16 means the engines' bfloat16 (where a CPU lacks bf16 GEMMs, Neutrino's default is fp32)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--min-prompt", type=int, default=64)
    p.add_argument("--max-prompt", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--batch1-prompt", type=int, default=32, help="prompt tokens for the batch-1 runs")
    p.add_argument("--prefill-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-cache-memory", type=float, default=2.0, help="KV budget in GiB, the same for all")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=1800.0, help="per engine and precision (s)")
    p.add_argument("--log-dir", default=None, help="engine logs (default: a new temporary directory)")
    p.add_argument("--out", default=None, help="write the JSON here (after every engine)")
    return p


def _workloads(ns: argparse.Namespace) -> dict[str, Any]:
    from neutrino.bench.workload import slice_prompts, text_token_pool
    from neutrino.weights.resolve import resolve_model
    from neutrino.weights.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model(None).tokenizer_path or resolve_model(None).path)
    pool = text_token_pool(tokenizer, 4 * max(ns.max_prompt, ns.prefill_len) + 8)
    out: dict[str, Any] = {"warmup": pool[:16]}
    if "batch1" in ns.workloads:
        out["batch1"] = {"prompts": slice_prompts(pool, 3, ns.batch1_prompt, ns.batch1_prompt, seed=1),
                         "output_len": ns.output_len}
    if "prefill" in ns.workloads:
        out["prefill"] = {"prompts": slice_prompts(pool, 3, ns.prefill_len, ns.prefill_len, seed=2)}
    if "throughput" in ns.workloads:
        out["throughput"] = {"prompts": slice_prompts(pool, ns.num_requests, ns.min_prompt, ns.max_prompt, seed=0),
                             "output_len": ns.output_len}
    return out


def _bytes_per_token(precisions: list[str]) -> dict[str, int]:
    from neutrino.bench.peers import assets

    out = {}
    for precision in precisions:
        try:
            out[precision] = assets.gguf(precision).stat().st_size
        except (NeutrinoError, OSError):
            continue
    return out


def run(ns: argparse.Namespace) -> dict[str, Any]:
    from neutrino.bench.peers import report as rep
    from neutrino.bench.peers.context import RunContext
    from neutrino.bench.peers.engines import ENGINES
    from neutrino.bench.throughput import machine_description
    from neutrino.kernels.torch_features import cpu_has_bf16_gemm

    engines = [ENGINES.get(name)() for name in ns.engines]  # unknown names fail before anything runs
    log_dir = Path(ns.log_dir or tempfile.mkdtemp(prefix="neutrino-peers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(ns.threads, int(ns.kv_cache_memory * 2**30), ns.max_num_seqs, ns.max_num_batched_tokens,
                     max(ns.max_prompt, ns.prefill_len) + ns.output_len + 64, log_dir, ns.timeout,
                     "bfloat16" if cpu_has_bf16_gemm() else "float32")
    workloads = _workloads(ns)
    report: dict[str, Any] = {
        "benchmark": "peers", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(), "bandwidth": rep.bandwidth_probe(ns.threads),
        "bytes_per_token": _bytes_per_token(ns.precisions), "logs": str(log_dir),
        "workload": {k: getattr(ns, k) for k in ("precisions", "workloads", "num_requests", "min_prompt", "max_prompt",
                                                 "output_len", "batch1_prompt", "prefill_len", "threads",
                                                 "kv_cache_memory", "max_num_seqs", "max_num_batched_tokens")},
        "results": {},
    }
    for engine in engines:
        report["results"][engine.name] = _run_engine(engine, ns.precisions, workloads, ctx)
        _finish(report, ns.out)
    return report


def _run_engine(engine, precisions: list[str], workloads: dict[str, Any], ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reason = engine.unavailable()
    for precision in precisions:
        if reason is not None:
            out[precision] = {"error": f"not run: {reason}"}
        elif precision not in engine.precisions:
            continue
        else:
            try:
                out[precision] = engine.run(precision, workloads, ctx)
            except (NeutrinoError, OSError, ValueError) as exc:
                out[precision] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[peers] {engine.name} {precision}: {_brief(out.get(precision))}", file=sys.stderr, flush=True)
    return out


def _brief(result: dict[str, Any] | None) -> str:
    if not result:
        return "skipped"
    if "error" in result:
        return str(result["error"])[:300]
    parts = [f"{k} {result[w][k]:.1f}" for w, k in (("batch1", "batch1_decode_tok_s"), ("prefill", "prefill_tok_s"),
                                                 ("throughput", "output_tok_s")) if w in result]
    return ", ".join(parts + [f"rss {result.get('peak_rss_mib', 0):.0f} MiB", f"start {result.get('startup_s', 0):.1f} s"])


def _finish(report: dict[str, Any], out: str | None) -> None:
    from neutrino.bench.peers import report as rep

    report["ratios"] = rep.ratios(report["results"])
    report["targets"] = rep.targets(report["ratios"])
    report["batch1_streaming"] = rep.streaming(report["results"], report["bytes_per_token"], report["bandwidth"])
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)


def main(argv: list[str] | None = None, ns: argparse.Namespace | None = None) -> int:
    from neutrino.bench.peers import report as rep

    ns = ns or build_parser().parse_args(argv)
    if ns.threads < 1 or ns.num_requests < 1 or ns.output_len < 2 or ns.max_prompt < ns.min_prompt:
        raise ConfigError("--threads, --num-requests must be >= 1, --output-len >= 2, --max-prompt >= --min-prompt")
    report = run(ns)
    print("\n".join(rep.summary_lines(report)))
    return 0
