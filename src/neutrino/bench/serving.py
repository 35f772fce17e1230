"""Serving benchmark: streaming /v1/completions against OpenAI-compatible servers, Neutrino vs llama.cpp.

Each server runs every scenario on the same prompts (real text from gensim's lee_background.cor, lengths
uniform in [min, max] tokens, sent as text) with a fixed number of output tokens (EOS ignored):
  - max concurrency C: C clients, each sending its next request as soon as its previous one ends;
  - fixed arrival rate R: Poisson arrivals at R requests/s, with no cap on concurrency.
Reported per run: throughput (requests/s, output tok/s, prompt + output tok/s), time to first token (TTFT),
inter-token latency (ITL: the gaps between streamed chunks that carry text), time per output token (TPOT:
(last - first chunk) / (tokens - 1) per request) and end-to-end latency, as p50/p90/p99, and failures.

Every request opens a new TCP connection (`Connection: close`): llama-server drops reused keep-alive
connections under load. The servers run one after the other as subprocesses (never two at once): for
every scenario a fresh server is launched (so no prefix cache carries over), waited on until it answers
/v1/models, warmed up, and measured once the machine is quiet; a run that other processes disturbed is
repeated (see --quiet-cores, --attempts; llama.cpp's spinning thread pool slows down by 10-100x when the
cores are shared). The JSON holds the ratios Neutrino / each peer and the CPU used by others per run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from neutrino.bench.processes import (
    CpuMeter,
    ServingBenchmarkError,
    free_port,
    launched,
    wait_for_quiet,
    wait_ready,
)
from neutrino.errors import ConfigError, NeutrinoError

PEERS_DIR = Path(os.environ.get("NEUTRINO_PEERS_DIR", Path.home() / ".cache" / "neutrino-peers"))
_BIN = Path(sys.executable).parent

# Launch templates; placeholders: {model} {host} {port} {threads} {dtype} {slots} {ctx} {python}.
DEFAULT_COMMANDS = {
    "neutrino": f"{_BIN}/neutrino serve {{model}} --host {{host}} --port {{port}} --dtype {{dtype}} "
                "--threads {threads}",
    "neutrino-thread": f"{_BIN}/neutrino serve {{model}} --host {{host}} --port {{port}} --dtype {{dtype}} "
                       "--threads {threads} --no-engine-process",
    "vllm": f"env VLLM_CPU_OMP_THREADS_BIND=0-{{last_core}} VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=2 "
            f"{PEERS_DIR}/vllm/bin/python -m vllm.entrypoints.openai.api_server --model {{model}} --dtype {{dtype}} "
            "--max-num-seqs {slots} --max-model-len 2048 --host {host} --port {port}",
    "llama-server": f"{PEERS_DIR}/bin/llama-server -m {{model}} --host {{host}} --port {{port}} "
                    "-np {slots} -c {ctx} -t {threads}",
    "llama-cpp-python": f"{PEERS_DIR}/venv/bin/python -m llama_cpp.server --model {{model}} --host {{host}} "
                        "--port {port} --n_threads {threads} --n_threads_batch {threads} --n_ctx 4096 "
                        "--interrupt_requests False",  # else each new request aborts the one streaming
}


def ignore_eos_fields(server: str, output_len: int) -> dict:
    """Request fields that make `server` produce exactly `output_len` tokens."""
    if server == "llama-cpp-python":  # no ignore_eos; its min_tokens masks EOS until output_len
        return {"min_tokens": output_len}
    return {"ignore_eos": True}


# ---------------------------------------------------------------- one streamed request, raw HTTP/1.1


@dataclass
class RequestResult:
    """What one streamed completion request measured (times in seconds, from the request's start)."""

    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    count_method: str = ""  # where output_tokens came from: usage | timings | finish_length | chunks
    chunks: int = 0  # SSE events that carried text
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)  # gaps between text-carrying events

    @property
    def tpot(self) -> float | None:
        return None if self.output_tokens < 2 else (self.latency - self.ttft) / (self.output_tokens - 1)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ServingBenchmarkError(f"bad HTTP status line {status_line!r}")
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip().lower()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ServingBenchmarkError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield (await reader.readexactly(size + 2))[:-2]
    left = int(headers.get("content-length", "-1"))  # -1: until the server closes
    while left != 0:
        data = await reader.read(65536 if left < 0 else min(left, 65536))
        if not data:
            return
        left = left - len(data) if left > 0 else left
        yield data


async def sse_events(url: str, payload: dict) -> AsyncIterator[tuple[float, dict]]:
    """POST `payload` as JSON on a fresh connection; yield (arrival time, parsed `data:` JSON) per event,
    and (time, None) for `data: [DONE]`."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        body = json.dumps(payload).encode()
        writer.write(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                     f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                     .encode() + body)
        await writer.drain()
        status, headers = await _read_head(reader)
        if status != 200:
            text = b"".join([chunk async for chunk in _body(reader, headers)])
            raise ServingBenchmarkError(f"HTTP {status}: {text[:300].decode(errors='replace')}")
        buffer = b""
        async for data in _body(reader, headers):
            now = time.perf_counter()
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                if (event := line[5:].strip()) == b"[DONE]":
                    yield now, None
                    return
                yield now, json.loads(event)
    finally:
        writer.close()


async def send_request(url: str, prompt: str, prompt_tokens: int, output_len: int, extra: dict,
                       timeout: float) -> RequestResult:
    """One streaming completion; never raises (a failure is a result with ok=False)."""
    payload = {"prompt": prompt, "max_tokens": output_len, "temperature": 0.0,
               "stream": True, "stream_options": {"include_usage": True}, **extra}
    res, start, last = RequestResult(prompt_tokens=prompt_tokens), time.perf_counter(), None
    usage = timings = finish = None
    done = False  # saw [DONE] or a finish_reason: the stream was not cut short
    try:
        async with asyncio.timeout(timeout):
            async for now, event in sse_events(url, payload):
                if event is None:
                    done = True
                    continue
                usage = event.get("usage") or usage
                timings = event.get("timings") or timings
                for choice in event.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    if not choice.get("text"):
                        continue
                    if last is None:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    last, res.chunks = now, res.chunks + 1
        res.latency = (last or time.perf_counter()) - start
        _count_tokens(res, usage, timings, finish, output_len)
        res.ok = res.output_tokens > 0 and (done or finish is not None)
        if not res.ok:
            _fail(res, f"stream ended after {res.chunks} text events, finish_reason {finish!r}")
    except Exception as exc:  # noqa: BLE001 - one bad request is recorded, never stops the run
        _fail(res, f"{type(exc).__name__}: {exc}"[:300])
    return res


def _count_tokens(res: RequestResult, usage, timings, finish, output_len: int) -> None:
    if usage and usage.get("completion_tokens"):
        res.output_tokens, res.count_method = int(usage["completion_tokens"]), "usage"
        res.prompt_tokens = int(usage.get("prompt_tokens") or res.prompt_tokens)
    elif timings and timings.get("predicted_n"):
        res.output_tokens, res.count_method = int(timings["predicted_n"]), "timings"
        res.prompt_tokens = int(timings.get("prompt_n") or res.prompt_tokens)
    elif finish == "length":  # stopped by max_tokens: exactly output_len tokens
        res.output_tokens, res.count_method = output_len, "finish_length"
    else:
        res.output_tokens, res.count_method = res.chunks, "chunks"


def _fail(res: RequestResult, message: str) -> None:
    res.ok, res.error = False, message


# ---------------------------------------------------------------- load generation and statistics


async def run_load(url: str, prompts: list[tuple[str, int]], output_len: int, extra: dict, *,
                   concurrency: int | None, rate: float | None, seed: int = 0,
                   timeout: float = 600.0) -> tuple[list[RequestResult], float]:
    """Send all prompts, capped at `concurrency` in flight and/or arriving at Poisson `rate` per second."""
    gate = asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()
    rng = random.Random(seed)

    async def one(prompt: str, n_tokens: int) -> RequestResult:
        async with gate:
            return await send_request(url, prompt, n_tokens, output_len, extra, timeout)

    start = time.perf_counter()
    tasks = []
    for i, (prompt, n_tokens) in enumerate(prompts):
        if rate and i:
            await asyncio.sleep(rng.expovariate(rate))
        tasks.append(asyncio.create_task(one(prompt, n_tokens)))
    results = await asyncio.gather(*tasks)
    return results, time.perf_counter() - start


def percentiles(values: list[float]) -> dict | None:
    """p50/p90/p99 and mean (linear interpolation, as numpy), or None for no values."""
    if not values:
        return None
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(values))}


def summarize(results: list[RequestResult], duration: float, output_len: int) -> dict:
    """Throughput and latency percentiles of one run."""
    ok = [r for r in results if r.ok]
    out_tokens, in_tokens = sum(r.output_tokens for r in ok), sum(r.prompt_tokens for r in ok)
    return {
        "requests": len(results),
        "completed": len(ok),
        "failures": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
        "duration_s": duration,
        "request_throughput": len(ok) / duration,
        "prompt_tokens": in_tokens,
        "output_tokens": out_tokens,
        "output_tok_s": out_tokens / duration,
        "total_tok_s": (in_tokens + out_tokens) / duration,
        "short_requests": sum(r.output_tokens != output_len for r in ok),
        "token_count_method": dict(Counter(r.count_method for r in ok)),
        "tokens_per_chunk": out_tokens / max(1, sum(r.chunks for r in ok)),
        "ttft_s": percentiles([r.ttft for r in ok]),
        "itl_s": percentiles([gap for r in ok for gap in r.itl]),
        "tpot_s": percentiles([r.tpot for r in ok if r.tpot is not None]),
        "e2e_latency_s": percentiles([r.latency for r in ok]),
    }


# ---------------------------------------------------------------- launching servers


# ---------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class Scenario:
    """One load pattern: a cap on requests in flight and/or a Poisson arrival rate."""

    name: str
    concurrency: int | None
    rate: float | None


def scenarios(ns: argparse.Namespace) -> list[Scenario]:
    out = [Scenario(f"concurrency={c}", c, None) for c in ns.concurrency]
    return out + [Scenario(f"rate={r:g}", ns.rate_max_concurrency, r) for r in ns.request_rate]


def server_command(name: str, ns: argparse.Namespace, port: int) -> list[str]:
    template = getattr(ns, f"{name.replace('-', '_')}_cmd") or DEFAULT_COMMANDS[name]
    model = {"neutrino": ns.neutrino_model, "neutrino-thread": ns.neutrino_model,
             "vllm": ns.vllm_model}.get(name, ns.peer_model)
    return shlex.split(template.format(model=model, host="127.0.0.1", port=port, threads=ns.threads,
                                       dtype=ns.dtype, slots=ns.slots, ctx=ns.ctx, python=sys.executable,
                                       last_core=ns.threads - 1))


def bench_server(name: str, ns: argparse.Namespace, prompts: dict[str, list[tuple[str, int]]],
                 log_dir: Path) -> dict:
    """Every scenario of `name`, each on a freshly launched server (so no prefix cache carries over); a run
    that other processes disturbed (more than --quiet-cores) is repeated, up to --attempts times."""
    report: dict = {"runs": {}}
    for sc in scenarios(ns):
        discarded = []
        for attempt in range(1, ns.attempts + 1):
            run = one_run(name, ns, sc, prompts, log_dir / f"{name}.{sc.name}.{attempt}.log", report)
            if run["cpu"]["other_cores"] <= ns.quiet_cores or attempt == ns.attempts or not report["log"]:
                break
            discarded.append({k: run[k] for k in ("output_tok_s", "ttft_s", "cpu")})
            print(f"[serving] {name}: {sc.name}: disturbed ({run['cpu']['other_cores']:.2f} other cores), "
                  "again", file=sys.stderr, flush=True)
        report["runs"][sc.name] = run | {"attempt": attempt, "discarded_attempts": discarded}
    return report


def one_run(name: str, ns: argparse.Namespace, sc: Scenario, prompts: dict[str, list[tuple[str, int]]],
            log: Path, report: dict) -> dict:
    """Launch `name` (unless --url gives it), wait until ready, warm up, wait for a quiet machine, run
    scenario `sc`, kill the server. Fills the server-level fields of `report` (those of the latest launch)."""
    urls = dict(u.split("=", 1) for u in ns.url)
    port = free_port()
    base = urls.get(name, f"http://127.0.0.1:{port}").rstrip("/")
    command = None if name in urls else server_command(name, ns, port)
    report.update(url=base, command=shlex.join(command) if command else None, log=str(log) if command else None)
    with contextlib.nullcontext(None) if command is None else launched(command, log) as proc:
        report["ready_s"], model_id = wait_ready(base, proc, ns.ready_timeout)
        endpoint, model = f"{base}/v1/completions", {"model": model_id} if model_id else {}
        warm = [asyncio.run(send_request(endpoint, p, n, 16, model | ignore_eos_fields(name, 16), ns.timeout))
                for p, n in prompts["warmup"]]
        report["warmup"] = summarize(warm, 1.0, 16) | {"expected_tokens": 16}
        report["request_fields"] = extra = model | ignore_eos_fields(name, ns.output_len)
        pgid = proc.pid if proc else None
        quiet = wait_for_quiet(pgid, ns.quiet_cores, ns.quiet_timeout)
        print(f"[serving] {name}: {sc.name}, {ns.num_requests} requests", file=sys.stderr, flush=True)
        meter = CpuMeter(pgid)
        results, duration = asyncio.run(run_load(endpoint, prompts[sc.name], ns.output_len, extra,
                                                 concurrency=sc.concurrency, rate=sc.rate, seed=ns.seed,
                                                 timeout=ns.timeout))
        cpu = meter.read()
    run = {"concurrency": sc.concurrency, "request_rate": sc.rate} | summarize(results, duration, ns.output_len)
    print(f"[serving] {name}: {sc.name}: {run['output_tok_s']:.1f} output tok/s, {run['failures']} failures, "
          f"{cpu['other_cores']:.2f} other cores", file=sys.stderr, flush=True)
    return run | {"before_run": quiet, "cpu": cpu, "server_ready_s": report["ready_s"], "log": report["log"]}


def ratios(servers: dict, target: float) -> dict:
    """Neutrino / peer per scenario. Throughputs: higher is better; latencies: lower is better."""
    mine = servers.get("neutrino", {}).get("runs")
    out: dict = {}
    for peer, rep in servers.items():
        if peer == "neutrino" or not mine or "runs" not in rep:
            continue
        for sc, a in mine.items():
            b = rep["runs"].get(sc)
            if b is None or not a["completed"] or not b["completed"]:
                continue
            r = {k: a[k] / b[k] for k in ("request_throughput", "output_tok_s", "total_tok_s")}
            for metric in ("ttft_s", "itl_s", "tpot_s"):
                for p in ("p50", "p99"):
                    if a[metric] and b[metric] and b[metric][p] > 0:
                        r[f"{metric[:-2]}_{p}"] = a[metric][p] / b[metric][p]
            if sc.startswith("concurrency="):
                r["target_met"] = r["output_tok_s"] >= target and r.get("ttft_p99", 1e9) <= 1.0
            out.setdefault(peer, {})[sc] = r
    return out


def make_text_prompts(ns: argparse.Namespace) -> dict[str, list[tuple[str, int]]]:
    """Per scenario (and for the warm-up), (text, token count) pairs: seeded slices of lee_background.cor
    decoded back to text. Each scenario gets its own seed, so that no server finds an earlier scenario's
    prompts in its prefix cache; every server gets the same prompts."""
    from neutrino.bench.workload import slice_prompts, text_token_pool
    from neutrino.weights.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(Path(ns.neutrino_model))
    pool = text_token_pool(tokenizer, ns.max_prompt * 4)
    out = {}
    for i, name in enumerate(["warmup"] + [sc.name for sc in scenarios(ns)]):
        num = 2 if name == "warmup" else ns.num_requests
        ids = slice_prompts(pool, num, ns.min_prompt, ns.max_prompt, seed=ns.seed * 1000 + i)
        out[name] = [(tokenizer.decode(p), len(p)) for p in ids]
    return out


def run(ns: argparse.Namespace) -> dict:
    from neutrino.bench.throughput import machine_description

    _check_args(ns)
    if ns.nice:
        try:
            os.nice(ns.nice)  # the servers inherit it
        except PermissionError as exc:
            raise ConfigError(f"--nice {ns.nice}: not permitted ({exc}); negative values need root") from exc
    prompts = make_text_prompts(ns)
    log_dir = Path(ns.log_dir or tempfile.mkdtemp(prefix="neutrino-serving-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "benchmark": "serving",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "workload": {k: getattr(ns, k) for k in ("num_requests", "min_prompt", "max_prompt", "output_len",
                                                 "concurrency", "request_rate", "rate_max_concurrency",
                                                 "seed", "dtype", "threads", "nice", "neutrino_model", "peer_model")},
        "method": "streaming POST /v1/completions, temperature 0, text prompts, one new TCP connection "
                  "per request; TTFT and latency from sending the request; ITL = gaps between SSE events "
                  "carrying text; output tokens counted from usage.completion_tokens if the stream has it, "
                  "else llama-server's timings.predicted_n, else finish_reason 'length' (= max_tokens), "
                  "else the number of text events (see token_count_method per run)",
        "servers": {},
    }
    for name in ns.servers:
        start = time.perf_counter()
        try:
            report["servers"][name] = bench_server(name, ns, prompts, log_dir)
        except (NeutrinoError, OSError) as exc:
            report["servers"][name] = {"error": f"{type(exc).__name__}: {exc}", "logs": str(log_dir)}
            print(f"[serving] {name}: {report['servers'][name]['error']}", file=sys.stderr, flush=True)
        report["servers"][name]["wall_s"] = time.perf_counter() - start
        report["ratios"] = ratios(report["servers"], ns.target_ratio)
        if ns.out:  # after every server, so that an interrupted run keeps what it measured
            write_json(Path(ns.out), report)
    return report


def _check_args(ns: argparse.Namespace) -> None:
    unknown = [s for s in ns.servers if s not in DEFAULT_COMMANDS]
    if unknown:
        raise ConfigError(f"unknown server(s) {unknown}; expected some of {sorted(DEFAULT_COMMANDS)}")
    bad_urls = [u for u in ns.url if "=" not in u or u.split("=", 1)[0] not in DEFAULT_COMMANDS]
    if bad_urls:
        raise ConfigError(f"--url {bad_urls}: expected NAME=http://host:port with NAME in {sorted(DEFAULT_COMMANDS)}")
    if not ns.concurrency and not ns.request_rate:
        raise ConfigError("nothing to run: give --concurrency and/or --request-rate")
    if ns.attempts < 1:
        raise ConfigError(f"--attempts {ns.attempts}: expected >= 1")
    if "vllm" in ns.servers and ns.vllm_model is None:
        from neutrino.weights.resolve import resolve_model

        ns.vllm_model = str(resolve_model(None).path)
    if ns.num_requests < 1 or ns.output_len < 1 or ns.min_prompt < 1 or ns.max_prompt < ns.min_prompt:
        raise ConfigError("--num-requests, --output-len, --min-prompt must be >= 1 and --max-prompt >= --min-prompt")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from neutrino.weights.default import default_gguf_path

    p = parser or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", nargs="+", default=["neutrino", "llama-server", "llama-cpp-python"],
                   help="servers to benchmark, one after the other (neutrino first)")
    p.add_argument("--url", action="append", default=[], metavar="NAME=URL",
                   help="use an already running server for NAME instead of launching it")
    p.add_argument("--num-requests", type=int, default=64, help="requests per scenario")
    p.add_argument("--min-prompt", type=int, default=64)
    p.add_argument("--max-prompt", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--concurrency", type=int, nargs="*", default=[32], help="max-concurrency scenarios")
    p.add_argument("--request-rate", type=float, nargs="*", default=[2.0], help="Poisson arrival scenarios (req/s)")
    p.add_argument("--rate-max-concurrency", type=int, default=None, help="cap on in-flight requests at a rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="per-request limit (s)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="server start-up limit (s)")
    p.add_argument("--threads", type=int, default=2, help="server threads ({threads} in the commands)")
    p.add_argument("--dtype", default="bfloat16", help="Neutrino's dtype ({dtype})")
    p.add_argument("--slots", type=int, default=32, help="llama-server parallel slots -np ({slots})")
    p.add_argument("--ctx", type=int, default=32768, help="llama-server total context -c ({ctx})")
    p.add_argument("--neutrino-model", default=str(default_gguf_path()), help="({model}) for Neutrino")
    p.add_argument("--vllm-model", default=None,
                   help="HF directory for vLLM (default: the embedded model's converted directory)")
    p.add_argument("--peer-model", default=str(PEERS_DIR / "models" / "SmolLM2-135M-Instruct.BF16.gguf"),
                   help="({model}) for the llama.cpp servers; scripts/build_peers.sh makes the default")
    for name in DEFAULT_COMMANDS:
        p.add_argument(f"--{name}-cmd", default=None, help=f"launch template (default: {DEFAULT_COMMANDS[name]})")
    p.add_argument("--quiet-cores", type=float, default=0.25,
                   help="before each run, wait until other processes use at most this many cores")
    p.add_argument("--quiet-timeout", type=float, default=900.0, help="longest wait for a quiet machine (s)")
    p.add_argument("--attempts", type=int, default=3,
                   help="runs per scenario until one is not disturbed by other processes (> --quiet-cores)")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness for this client and the servers it launches (negative: ahead of other jobs)")
    p.add_argument("--target-ratio", type=float, default=1.5, help="throughput target vs each peer")
    p.add_argument("--log-dir", default=None, help="server logs (default: a new temporary directory)")
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout only)")
    return p


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that `launched` still kills the server it started


def main(argv: list[str] | None = None, ns: argparse.Namespace | None = None) -> int:
    ns = ns or build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    print(json.dumps(run(ns), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
