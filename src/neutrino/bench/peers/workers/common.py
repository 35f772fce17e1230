"""Shared by every peer worker. A worker runs in its peer's own interpreter (vLLM's, OpenVINO's, or the
project's venv), so this file imports nothing outside the standard library and is found next to the
worker script, not through the neutrino package.

Protocol: the worker reads the job (JSON) from the file named by its first argument, prints one line
`{"event": "ready", "t": <unix time>}` once its engine is built, then runs each workload with the same
timing code for every engine and prints `{"event": "result", ...}`. Every engine gets the same token-id
prompts, greedy decoding and EOS ignored, so all of them produce exactly the tokens asked for."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# generate(prompts, max_tokens) -> tokens generated in all
Generate = Callable[[list[list[int]], int], int]


def read_job() -> dict[str, Any]:
    with open(sys.argv[1], encoding="utf-8") as f:
        job: dict[str, Any] = json.load(f)
    return job


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _timed(generate: Generate, prompts: list[list[int]], max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    n = generate(prompts, max_tokens)
    return time.perf_counter() - start, n


def batch1_decode(generate: Generate, prompts: list[list[int]], output_len: int) -> dict[str, Any]:
    """Decode tok/s at batch 1: (T(output_len) - T(1)) over output_len - 1 tokens, per prompt, median;
    the same subtraction for every engine, whether or not it streams."""
    rates, first = [], []
    for prompt in prompts:
        t1, _ = _timed(generate, [prompt], 1)
        tn, n = _timed(generate, [prompt], output_len)
        if n != output_len:
            raise RuntimeError(f"asked for {output_len} tokens, the engine produced {n}")
        rates.append((output_len - 1) / max(tn - t1, 1e-9))
        first.append(t1)
    return {"batch1_decode_tok_s": statistics.median(rates), "samples_tok_s": rates,
            "ttft_s": statistics.median(first), "prompt_len": len(prompts[0]), "output_len": output_len}


def prefill(generate: Generate, prompts: list[list[int]]) -> dict[str, Any]:
    """Prompt tokens/s for single prompts of equal length (one output token), median of the prompts;
    each prompt differs, so no prefix cache can help."""
    rates = [len(p) / _timed(generate, [p], 1)[0] for p in prompts]
    return {"prefill_tok_s": statistics.median(rates), "samples_tok_s": rates, "prompt_len": len(prompts[0])}


def throughput(generate: Generate, prompts: list[list[int]], output_len: int) -> dict[str, Any]:
    elapsed, generated = _timed(generate, prompts, output_len)
    if generated != output_len * len(prompts):
        raise RuntimeError(f"asked for {output_len * len(prompts)} tokens, the engine produced {generated}")
    prompt_tokens = sum(len(p) for p in prompts)
    return {"elapsed_s": elapsed, "requests": len(prompts), "prompt_tokens": prompt_tokens,
            "generated_tokens": generated, "output_tok_s": generated / elapsed,
            "total_tok_s": (prompt_tokens + generated) / elapsed}


def run(job: dict[str, Any], generate: Generate) -> None:
    """Warm up, then every workload the job names; prints the result line."""
    w = job["workloads"]
    generate([w["warmup"]], 4)
    result: dict[str, Any] = {}
    if "batch1" in w:
        result["batch1"] = batch1_decode(generate, w["batch1"]["prompts"], w["batch1"]["output_len"])
    if "prefill" in w:
        result["prefill"] = prefill(generate, w["prefill"]["prompts"])
    if "throughput" in w:
        result["throughput"] = throughput(generate, w["throughput"]["prompts"], w["throughput"]["output_len"])
    emit("result", **result)


def main(build: Callable[[dict[str, Any]], Generate]) -> None:
    job = read_job()
    generate = build(job)
    emit("ready", t=time.time())
    run(job, generate)
