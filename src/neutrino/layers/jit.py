"""Shared build machinery of the JIT-compiled C++ kernel libraries (`layers/attention/cpu_kernels.py`,
`layers/quant/cpu_kernels.py`).

Each library is one translation unit compiled with `torch.utils.cpp_extension.load` and `-march=native`,
so its build directory name hashes the source, the flags, the torch/Python versions and the CPU
model/flags: a cache shared between machines never hands one a binary built for another's ISA. Later
processes only load the cached library (~0.1 s).

Where: `$NEUTRINO_KERNEL_CACHE_DIR`, else `$TORCH_EXTENSIONS_DIR`, else torch's default extension root
(`~/.cache/torch_extensions`), in a `neutrino/` subfolder. Not under `$NEUTRINO_CACHE_DIR` on purpose:
test sessions point that at temp dirs, which would recompile the kernels every session.

Concurrency: torch's builder serialises builders of a build directory with a `lock` file created with
O_EXCL (other processes poll until it disappears), but a builder killed mid-build leaves that file
behind and every later process would wait on it forever. So we also hold an `fcntl.flock` (released by
the OS when its holder dies) around the build and, while holding it, delete a leftover `lock` file: no
live neutrino builder can own it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DISABLE_ENV = "NEUTRINO_DISABLE_CPP_KERNELS"
CACHE_ENV = "NEUTRINO_KERNEL_CACHE_DIR"
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno")
LDFLAGS = ("-fopenmp",)  # links libgomp.so.1, i.e. the one torch already loaded: one shared OpenMP pool


def disabled() -> bool:
    """NEUTRINO_DISABLE_CPP_KERNELS is set to a true value."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def cache_root() -> Path:
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    if env := os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(env).expanduser() / "neutrino"
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root()) / "neutrino"


def cpu_fingerprint() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "|".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def extension_name(prefix: str, source: str) -> str:
    key = "\n".join([source, *CFLAGS, *LDFLAGS, torch.__version__, sys.version, cpu_fingerprint()])
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class FileLock:
    """Inter-process exclusive lock with flock: released by the OS if the holder dies (no-op without fcntl)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> FileLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def build_library(prefix: str, source: str, what: str) -> bool:
    """Compile (once per machine, under the locks above) and load the library `source` as a TORCH_LIBRARY
    op library; `what` names it in the logs. Returns whether it was compiled now (False: loaded from the
    cache). Raises on any build or load failure."""
    from torch.utils.cpp_extension import load

    name = extension_name(prefix, source)
    root = cache_root()
    build_dir = root / name
    build_dir.mkdir(parents=True, exist_ok=True)
    src_path = build_dir / f"{name}.cpp"
    t0 = time.perf_counter()
    with FileLock(root / f"{name}.flock"):
        stale = build_dir / "lock"
        if stale.exists():  # we hold the flock, so no live neutrino builder owns it
            logger.warning("removing stale torch extension lock %s", stale)
            stale.unlink(missing_ok=True)
        if not src_path.exists() or src_path.read_text() != source:
            tmp = src_path.with_name(f"{src_path.name}.tmp{os.getpid()}")
            tmp.write_text(source)
            os.replace(tmp, src_path)
        fresh = not (build_dir / f"{name}.so").exists()
        if fresh:
            logger.info("compiling the C++ %s (one-time, cached in %s)...", what, build_dir)
        load(name=name, sources=[str(src_path)],
             extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),  # copies: torch appends to these lists
             build_directory=str(build_dir), is_python_module=False, verbose=False)
    if fresh:
        logger.info("compiled the C++ %s in %.1fs", what, time.perf_counter() - t0)
    return fresh
