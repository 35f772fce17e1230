"""Loads the CPU kernels compiled at install (`neutrino/_kernels_<variant>.so`, see `variants.py`).

The best variant the CPU can run is picked from its /proc/cpuinfo flags (the kernel's view of CPUID) and
loaded once per process with `torch.ops.load_library`, which registers the op libraries
`torch.ops.neutrino_cpu` and `torch.ops.neutrino_quant`. Nothing is compiled at run time.

`NEUTRINO_KERNEL_ISA=<variant>` loads that variant instead (an error if the CPU lacks its flags or it was
not built); `NEUTRINO_DISABLE_CPP_KERNELS=1` loads none. When no variant can be loaded, the reason is
logged once at WARNING level and `load()` returns None: callers then run their torch paths.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from neutrino.kernels.variants import VARIANTS, module_name

logger = logging.getLogger(__name__)

DISABLE_ENV = "NEUTRINO_DISABLE_CPP_KERNELS"
ISA_ENV = "NEUTRINO_KERNEL_ISA"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # where setup.py puts the shared objects


@dataclass(frozen=True)
class Kernels:
    """The loaded variant: its name, file, and the code paths its ops compiled (from the library)."""

    variant: str
    path: Path
    attention_isa: str  # "avx512+bf16", "avx512", "avx2" or "generic"
    quant_isa: str  # "avx512-vnni", "avx512+avx2-int8", "avx2-int8" or "generic"

    def describe(self) -> str:
        return (f"CPU kernels: variant {self.variant} ({self.path.name}); attention {self.attention_isa}, "
                f"low-bit linears {self.quant_isa}")


_UNSET = object()
_state: object = _UNSET  # Kernels, None (unavailable) or _UNSET (not decided)
_loaded: Kernels | None = None  # a library loads once per process; reset() keeps it
_lock = threading.Lock()
last_error: str | None = None  # why no kernels are loaded (for logs and test skip reasons)


def disabled() -> bool:
    """NEUTRINO_DISABLE_CPP_KERNELS is set to a true value."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where it can't be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def supported_variants(flags: set[str] | None = None) -> list[str]:
    """The variants this CPU can run, best first (whether or not they were built)."""
    flags = cpu_flags() if flags is None else flags
    return [name for name, (_, needs) in VARIANTS.items() if set(needs) <= flags]


def library_path(variant: str) -> Path | None:
    """The installed shared object of `variant`, or None when it was not built."""
    hits = sorted(PACKAGE_DIR.glob(f"{module_name(variant)}*.so"))
    return hits[0] if hits else None


def built_variants() -> list[str]:
    return [name for name in VARIANTS if library_path(name) is not None]


def choose(flags: set[str] | None = None) -> tuple[str, Path]:
    """The variant to load and its file; raises RuntimeError with the reason when there is none."""
    runnable = supported_variants(flags)
    if want := os.environ.get(ISA_ENV, "").strip():
        if want not in VARIANTS:
            raise RuntimeError(f"{ISA_ENV}={want!r} is not a kernel variant; expected one of {list(VARIANTS)}")
        if want not in runnable:
            missing = sorted(set(VARIANTS[want][1]) - (cpu_flags() if flags is None else flags))
            raise RuntimeError(f"{ISA_ENV}={want!r}: this CPU lacks {', '.join(missing)}")
        runnable = [want]
    if not runnable:
        raise RuntimeError(f"this CPU supports none of the kernel variants {list(VARIANTS)} (needs at least AVX2)")
    for name in runnable:
        if (path := library_path(name)) is not None:
            return name, path
    raise RuntimeError(
        f"no compiled kernel variant for this CPU in {PACKAGE_DIR} (it can run {runnable}; built: "
        f"{built_variants() or 'none'}); reinstall with a C++ compiler: bash scripts/install.sh")


def _load_library() -> Kernels:
    import torch

    variant, path = choose()
    torch.ops.load_library(str(path))
    built = str(torch.ops.neutrino_cpu.variant())
    if built != variant:  # pragma: no cover - a renamed or mismatched file
        raise RuntimeError(f"{path.name} holds variant {built!r}, expected {variant!r}")
    return Kernels(variant, path, str(torch.ops.neutrino_cpu.isa()), str(torch.ops.neutrino_quant.isa()))


def load() -> Kernels | None:
    """The loaded kernels (loaded on the first call), or None when disabled or unavailable."""
    global _state, _loaded, last_error
    if _state is not _UNSET:
        return _state  # type: ignore[return-value]
    with _lock:
        if _state is not _UNSET:
            return _state  # type: ignore[return-value]
        if disabled():
            last_error = f"disabled by {DISABLE_ENV}"
            logger.info("C++ CPU kernels %s; using the torch paths", last_error)
            _state = None
        elif _loaded is not None:
            _state, last_error = _loaded, None
        else:
            try:
                _state = _loaded = _load_library()
                last_error = None
                logger.info("%s", _loaded.describe())
            except Exception as e:  # noqa: BLE001 - any failure means: use the torch paths, loudly
                last_error = f"{type(e).__name__}: {e}"
                logger.warning("C++ CPU kernels unavailable, using the slower torch paths: %s", last_error)
                _state = None
        return _state  # type: ignore[return-value]


def reset() -> None:
    """Forget the decision (re-reads the environment); for tests. A library already loaded stays loaded:
    a process can hold only one variant's op registrations."""
    global _state
    with _lock:
        _state = _UNSET
