"""JIT-compiled C++ low-bit kernels for CPU (`torch.ops.neutrino_quant.*`, source in `_cpu_quant_src.py`).

Built like the attention kernels, by `layers/jit.py`: compiled with `-march=native` on first use,
never at import time, cached under a name that hashes the source, flags, torch/Python versions and CPU;
later processes only load the cached library. Any failure (no compiler, compile or load error) logs one
warning and makes `ops()` return None: the quant methods then take their torch paths (correct, slower).
`NEUTRINO_DISABLE_CPP_KERNELS=1` disables these kernels too.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from neutrino.layers import jit

logger = logging.getLogger(__name__)

_EXT_PREFIX = "neutrino_cpu_quant"
_UNSET: Any = object()
_ops: Any = _UNSET  # torch.ops.neutrino_quant once loaded, None when unavailable
_loaded: Any = None  # the library once loaded (it loads once per process; reset() keeps it)
_lock = threading.Lock()
last_error: str | None = None  # why the kernels are unavailable (for logs and test skip reasons)


def _source() -> str:
    from neutrino.layers.quant import _cpu_quant_src as src

    return f"// neutrino quant kernel version {src.KERNEL_VERSION}\n{src.SOURCE}"


def _build_and_load() -> Any:
    if jit.build_library(_EXT_PREFIX, _source(), "quantized-linear kernels"):
        logger.info("quantized-linear kernel code path: %s", torch.ops.neutrino_quant.isa())
    return torch.ops.neutrino_quant


def ops() -> Any:
    """`torch.ops.neutrino_quant` (compiled/loaded on the first call), or None when unavailable."""
    global _ops, _loaded, last_error
    if _ops is not _UNSET:
        return _ops
    with _lock:
        if _ops is not _UNSET:
            return _ops
        if jit.disabled():
            last_error = f"disabled by {jit.DISABLE_ENV}"
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
