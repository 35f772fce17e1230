"""JIT-compiled C++ low-bit kernels for CPU (`torch.ops.neutrino_quant.*`, source in `_cpu_quant_src.py`).

Built like the attention kernels (`layers/attention/cpu_kernels.py`, whose cache directory, CPU
fingerprint and inter-process build lock this module reuses): compiled with `-march=native` on first use,
never at import time, cached under a name that hashes the source, flags, torch/Python versions and CPU;
later processes only load the cached library. Any failure (no compiler, compile or load error) logs one
warning and makes `ops()` return None: the quant methods then take their torch paths (correct, slower).
`NEUTRINO_DISABLE_CPP_KERNELS=1` disables these kernels too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from typing import Any

import torch

from neutrino.layers.attention.cpu_kernels import DISABLE_ENV, _cache_root, _cpu_fingerprint, _FileLock

logger = logging.getLogger(__name__)

_EXT_PREFIX = "neutrino_cpu_quant"
_CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno")
_LDFLAGS = ("-fopenmp",)
_UNSET: Any = object()
_ops: Any = _UNSET  # torch.ops.neutrino_quant once loaded, None when unavailable
_loaded: Any = None  # the library once loaded (it loads once per process; reset() keeps it)
_lock = threading.Lock()
last_error: str | None = None  # why the kernels are unavailable (for logs and test skip reasons)


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _source() -> str:
    from neutrino.layers.quant import _cpu_quant_src as src

    return f"// neutrino quant kernel version {src.KERNEL_VERSION}\n{src.SOURCE}"


def _extension_name(source: str) -> str:
    key = "\n".join([source, *_CFLAGS, *_LDFLAGS, torch.__version__, sys.version, _cpu_fingerprint()])
    return f"{_EXT_PREFIX}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _build_and_load() -> Any:
    from torch.utils.cpp_extension import load

    source = _source()
    name = _extension_name(source)
    root = _cache_root()
    build_dir = root / name
    build_dir.mkdir(parents=True, exist_ok=True)
    src_path = build_dir / f"{name}.cpp"
    t0 = time.perf_counter()
    with _FileLock(root / f"{name}.flock"):
        stale = build_dir / "lock"
        if stale.exists():  # we hold the flock, so no live neutrino builder owns it
            stale.unlink(missing_ok=True)
        if not src_path.exists() or src_path.read_text() != source:
            tmp = src_path.with_name(f"{src_path.name}.tmp{os.getpid()}")
            tmp.write_text(source)
            os.replace(tmp, src_path)
        fresh = not (build_dir / f"{name}.so").exists()
        if fresh:
            logger.info("compiling the C++ quantized-linear kernels (one-time, cached in %s)...", build_dir)
        load(name=name, sources=[str(src_path)], extra_cflags=list(_CFLAGS), extra_ldflags=list(_LDFLAGS),
             build_directory=str(build_dir), is_python_module=False, verbose=False)
    if fresh:
        logger.info("compiled the quantized-linear kernels in %.1fs (%s)", time.perf_counter() - t0,
                    torch.ops.neutrino_quant.isa())
    return torch.ops.neutrino_quant


def ops() -> Any:
    """`torch.ops.neutrino_quant` (compiled/loaded on the first call), or None when unavailable."""
    global _ops, _loaded, last_error
    if _ops is not _UNSET:
        return _ops
    with _lock:
        if _ops is not _UNSET:
            return _ops
        if _disabled():
            last_error = f"disabled by {DISABLE_ENV}"
            _ops = None
            return None
        if _loaded is not None:
            _ops = _loaded
            return _ops
        try:
            _ops = _loaded = _build_and_load()
            last_error = None
        except Exception as e:  # noqa: BLE001 - any failure means: use the torch path
            lines = str(e).strip().splitlines() or [""]
            last_error = f"{type(e).__name__}: {' | '.join(lines[-8:])[:3000]}"
            logger.warning("C++ quantized-linear kernels unavailable, using torch paths (%s)", last_error)
            _ops = None
        return _ops


def reset() -> None:
    """Forget the availability decision (re-reads NEUTRINO_DISABLE_CPP_KERNELS); for tests. A library
    already loaded stays registered in torch.ops and is reused."""
    global _ops
    with _lock:
        _ops = _UNSET
