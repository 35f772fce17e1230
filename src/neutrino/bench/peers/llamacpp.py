"""llama.cpp in the peer benchmark: `llama-bench` for batch-1 decode (tg, empty context) and prefill
(pp), `llama-server` with one slot per request for offline throughput, its start-up and peak memory."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from neutrino.bench.peers import assets
from neutrino.bench.peers.context import RunContext
from neutrino.bench.peers.process import PeakRss, PeerRunError
from neutrino.bench.processes import free_port, launched


def run(model: Path, workloads: dict[str, Any], ctx: RunContext, name: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if "batch1" in workloads or "prefill" in workloads:
        result.update(_bench(model, workloads, ctx))
    if "throughput" in workloads:
        result.update(_server_throughput(model, workloads, ctx, name))
    return result


def _bench(model: Path, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    n_gen = workloads.get("batch1", {}).get("output_len", 128)
    n_prompt = len(workloads["prefill"]["prompts"][0]) if "prefill" in workloads else 0
    command = [str(assets.llama_tool("llama-bench")), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
               "-r", "3", "-t", str(ctx.threads), "-o", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=ctx.timeout)
    if done.returncode != 0:
        raise PeerRunError(f"llama-bench exit code {done.returncode}: {done.stderr[-800:]}")
    rows = json.loads(done.stdout)
    out: dict[str, Any] = {}
    for row in rows:
        if row.get("n_gen") and "batch1" in workloads:
            out["batch1"] = {"batch1_decode_tok_s": row["avg_ts"], "samples_tok_s": row.get("samples_ts"),
                             "prompt_len": 0, "output_len": row["n_gen"], "method": "llama-bench tg"}
        elif row.get("n_prompt") and "prefill" in workloads:
            out["prefill"] = {"prefill_tok_s": row["avg_ts"], "samples_tok_s": row.get("samples_ts"),
                              "prompt_len": row["n_prompt"], "method": "llama-bench pp"}
    return out


def _server_throughput(model: Path, workloads: dict[str, Any], ctx: RunContext, name: str) -> dict[str, Any]:
    w = workloads["throughput"]
    prompts, output_len = w["prompts"], w["output_len"]
    slots = len(prompts)
    per_slot = max(len(p) for p in prompts) + output_len + 16
    port = free_port()
    command = [str(assets.llama_tool("llama-server")), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(slots), "-c", str(slots * per_slot), "-t", str(ctx.threads)]
    url = f"http://127.0.0.1:{port}"
    started = time.time()
    with launched(command, ctx.log_dir / f"{name}-server.log") as proc:
        rss = PeakRss(proc.pid)
        try:
            startup = _wait_health(url, proc, ctx.timeout) - started
            _complete(url, workloads["warmup"], 4)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(slots) as pool:
                generated = sum(pool.map(lambda p: _complete(url, p, output_len), prompts))
            elapsed = time.perf_counter() - t0
        finally:
            peak = rss.stop()
    prompt_tokens = sum(len(p) for p in prompts)
    return {"throughput": {"elapsed_s": elapsed, "requests": len(prompts), "prompt_tokens": prompt_tokens,
                           "generated_tokens": generated, "output_tok_s": generated / elapsed,
                           "total_tok_s": (prompt_tokens + generated) / elapsed,
                           "method": f"llama-server -np {slots}, all requests at once"},
            "startup_s": startup, "peak_rss_mib": peak / 2**20}


def _wait_health(url: str, proc: subprocess.Popen, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise PeerRunError(f"llama-server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as reply:
                if reply.status == 200:
                    return time.time()
        except OSError:
            pass
        time.sleep(0.1)
    raise PeerRunError(f"llama-server not ready after {timeout:.0f} s")


def _complete(url: str, prompt: list[int], n: int) -> int:
    body = json.dumps({"prompt": prompt, "n_predict": n, "ignore_eos": True, "cache_prompt": False,
                       "temperature": 0}).encode()
    request = urllib.request.Request(f"{url}/completion", body, {"Content-Type": "application/json",
                                                                 "Connection": "close"})
    with urllib.request.urlopen(request, timeout=900) as reply:
        data = json.loads(reply.read())
    produced = int(data.get("tokens_predicted") or data.get("timings", {}).get("predicted_n") or 0)
    if produced != n:
        raise PeerRunError(f"llama-server produced {produced} tokens, asked for {n}")
    return produced
