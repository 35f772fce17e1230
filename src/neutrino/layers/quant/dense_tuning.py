"""Which dense linears run on the C++ small-batch kernel (`torch.ops.neutrino_cpu.dense_linear`, csrc/dense.cpp)
instead of torch's F.linear, and up to how many rows: measured on this machine, per weight shape, at load.

The two differ by machine: on a 2-vCPU AMD EPYC (AVX2, 2026-12-03) F.linear streams float32 weights at
about 7 GB/s at batch 1 and the kernel at about 15 GB/s, and the kernel still wins at 16-32 rows there;
on Intel with AMX the oneDNN bf16 path is prepacked and not replaced. So for each (dtype, N, K) group of
dense linears the model has, both run on the group's own weights (streamed from memory, as in decode)
at M = 1, 2, 4, ..., 512 rows, and the kernel takes every M up to the first at which it loses (every M
when it wins at all of them: past a few hundred rows both are compute-bound and keep their order). Small
M streams the weights from memory as decode does; from 16 rows on, where the step is compute-bound,
fewer bytes are timed (fewer layers, or the first rows of one large layer such as an LM head). Decisions are
cached per machine, kernel variant and version, torch version, thread count and OMP wait policy in
`tuning/dense_linear.json` under Neutrino's cache root (`~/.cache/neutrino`; delete it to measure
again); the first load measures, later loads read it.

NEUTRINO_DENSE_LINEAR: `auto` (default, measured), `off`, or a number: the kernel up to that many rows.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from neutrino.cache import cache_dir
from neutrino.errors import ConfigError
from neutrino.kernels import loader

logger = logging.getLogger(__name__)

ENV = "NEUTRINO_DENSE_LINEAR"
KERNEL_VERSION = 3  # bump when csrc/dense.cpp changes speed, so that cached decisions are measured again
CANDIDATE_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
NO_LIMIT = 1 << 30  # the kernel's row limit when it wins at every candidate
MEASURE_BYTES = 64 << 20  # weights timed per group and pass: more than a last-level cache holds
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def cache_path() -> Path:
    return cache_dir() / "tuning" / "dense_linear.json"


def dense_op() -> Callable[..., torch.Tensor] | None:
    """The kernel, or None when the C++ kernels are unavailable."""
    return None if loader.load() is None else torch.ops.neutrino_cpu.dense_linear


def _setting() -> int | None:
    """None: measure; otherwise the fixed row limit (0 = off)."""
    raw = os.environ.get(ENV, "auto").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in ("off", "0", "false", "no"):
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{ENV}={raw!r}: expected auto, off or a row count >= 0")
    return value


def _groups(model: nn.Module) -> dict[tuple[str, int, int], list[nn.Module]]:
    """Plain-layout dense CPU linears by (dtype, N, K); prepacked and quantized layers are left alone."""
    from neutrino.layers.quant.base import UnquantizedLinearMethod

    groups: dict[tuple[str, int, int], list[nn.Module]] = {}
    for module in model.modules():
        w = getattr(module, "weight", None)
        if (isinstance(getattr(module, "quant_method", None), UnquantizedLinearMethod) and isinstance(w, torch.Tensor)
                and w.device.type == "cpu" and w.dtype in _FLOATS and w.dim() == 2 and w.is_contiguous()):
            key = (str(w.dtype).removeprefix("torch."), int(w.shape[0]), int(w.shape[1]))
            groups.setdefault(key, []).append(module)
    return groups


def _machine_key() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kernels = loader.load()
    variant = kernels.variant if kernels is not None else "none"
    wait = os.environ.get("OMP_WAIT_POLICY", "default").lower()  # passive threads wake up slower
    return (f"{model}|{variant}|dense v{KERNEL_VERSION}|torch {torch.__version__}|threads {torch.get_num_threads()}"
            f"|wait {wait}")


def _sample(layers: list[nn.Module], budget: int) -> list[torch.Tensor]:
    """The weights of enough layers to hold `budget` bytes, or the first rows of one layer larger than that."""
    w = cast(torch.Tensor, layers[0].weight)
    row_bytes = w.shape[1] * w.element_size()
    if w.shape[0] * row_bytes > budget:
        return [w[: max(64, budget // row_bytes)]]  # a contiguous slice of rows: same kernel, less time
    return [cast(torch.Tensor, layer.weight) for layer in layers[: min(len(layers), -(-budget // (w.shape[0] * row_bytes)))]]


def _pass_time(fn: Callable[..., torch.Tensor], weights: list[torch.Tensor], x: torch.Tensor) -> float:
    start = time.perf_counter()
    for w in weights:
        fn(x, w, None)
    return time.perf_counter() - start


def measure(layers: list[nn.Module], op: Callable[..., torch.Tensor]) -> dict[str, Any]:
    """Time the kernel and F.linear on these layers' weights at each candidate row count; the kernel's
    row limit is the last count before the first at which it is slower."""
    w = cast(torch.Tensor, layers[0].weight)
    limit, timings, streamed = 0, {}, 0
    with torch.inference_mode():
        for rows in CANDIDATE_ROWS:
            # MEASURE_BYTES streamed from memory at few rows (a model smaller than that runs from cache
            # anyway), fewer bytes where the rows make it compute-bound
            sample = _sample(layers, MEASURE_BYTES * 8 // max(8, rows))
            streamed = max(streamed, sum(t.numel() * t.element_size() for t in sample))
            x = torch.randn(rows, w.shape[1], dtype=w.dtype)
            times = {}
            for name, fn in (("kernel", op), ("torch", nn.functional.linear)):
                _pass_time(fn, sample[:2], x)
                times[name] = min(_pass_time(fn, sample, x) for _ in range(2))
            timings[str(rows)] = times
            if times["kernel"] >= times["torch"]:
                break
            limit = NO_LIMIT if rows == CANDIDATE_ROWS[-1] else rows
    return {"max_rows": limit, "seconds_per_pass": timings, "bytes_per_pass": streamed}


def tune(model: nn.Module) -> dict[str, int]:
    """Set `dense_max_rows` on every eligible linear of `model`; returns the decision per group."""
    setting = _setting()
    op = dense_op() if setting != 0 else None
    groups = _groups(model)
    if op is None or not groups:
        return {}
    path = cache_path()
    cache = _read(path) if setting is None else {}
    machine = _machine_key()
    decided, changed = {}, False
    for (dtype, n, k), layers in groups.items():
        key = f"{machine}|{dtype}|{n}x{k}"
        if setting is not None:
            limit = setting
        elif key in cache:
            limit = int(cache[key]["max_rows"])
        else:
            cache[key] = measure(layers, op)
            limit, changed = int(cache[key]["max_rows"]), True
        for layer in layers:
            setattr(layer, "dense_max_rows", limit)  # noqa: B010 - read by UnquantizedLinearMethod.apply
        decided[f"{dtype} {n}x{k}"] = limit
    if changed:
        _write(path, cache)
    logger.info("dense linears on the small-batch kernel up to rows %s (%s)", decided,
                "measured" if changed else "cached" if setting is None else ENV)
    return decided


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:  # a read-only home: measure again next time
        logger.warning("cannot cache the dense-linear tuning at %s: %s", path, exc)
