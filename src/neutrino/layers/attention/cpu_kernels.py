"""JIT-compiled C++ kernels for CPU, with a fallback to the torch path when they can't be built.

One library holds the paged decode- and prefill-attention kernels and the fused bf16 elementwise kernels
(`layers/_cpu_fused_src.py`: add + RMSNorm, rotary, SiLU-and-mul).

The paged decode kernel (source in `_cpu_decode_src.py`, registered as the torch op
`torch.ops.neutrino_cpu.paged_decode_attention`) is compiled with `torch.utils.cpp_extension.load` on
first use — never at import time — or by an explicit `warmup()`. It is built with `-march=native`, so the
build directory name hashes the source, the flags, the torch/Python versions and the CPU model/flags: a
cache shared between different machines never hands one a binary built for another's ISA. Later
processes only load the cached library (~0.1 s).

Where: `$NEUTRINO_KERNEL_CACHE_DIR`, else `$TORCH_EXTENSIONS_DIR`, else torch's default extension root
(`~/.cache/torch_extensions`), in a `neutrino/` subfolder. Not under `$NEUTRINO_CACHE_DIR` on purpose:
test sessions point that at temp dirs, which would recompile the kernel every session.

Concurrency: torch's builder serialises builders of a build directory with a `lock` file created with
O_EXCL (other processes poll until it disappears, then load the result), but a builder killed mid-build
leaves that file behind and every later process would wait on it forever. So we also hold an
`fcntl.flock` (released by the OS when its holder dies) around the build, and, while holding it, delete a
leftover `lock` file: no live neutrino builder can own it.

Failure of any kind (no compiler, no ninja, compile error, load error) logs one warning and makes
`decode_kernel()` return None, so callers use their torch path. NEUTRINO_DISABLE_CPP_KERNELS=1 skips the
kernels entirely (read on first use; `reset()` re-reads it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DISABLE_ENV = "NEUTRINO_DISABLE_CPP_KERNELS"
CACHE_ENV = "NEUTRINO_KERNEL_CACHE_DIR"
_EXT_PREFIX = "neutrino_cpu_attn"
_CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno")
_LDFLAGS = ("-fopenmp",)  # links libgomp.so.1, i.e. the one torch already loaded: one shared OpenMP pool
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_UNSET = object()
_op = _UNSET  # torch.ops.neutrino_cpu.paged_decode_attention, None when unavailable, _UNSET before first use
_loaded = None  # the op once loaded (a library loads once per process; reset() keeps it)
_lock = threading.Lock()
_warned = False
_prefill_head_dims: dict[int, bool] = {}
_fused_sizes: dict[int, bool] = {}  # row size -> the fused elementwise kernels support it (this build)  # head_dim -> the prefill kernel supports it (this build)
last_error: str | None = None  # why the kernel is unavailable (for logs and test skip reasons)


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _cache_root() -> Path:
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    if env := os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(env).expanduser() / "neutrino"
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root()) / "neutrino"


def _cpu_fingerprint() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "|".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _extension_name(source: str) -> str:
    key = "\n".join([source, *_CFLAGS, *_LDFLAGS, torch.__version__, sys.version, _cpu_fingerprint()])
    return f"{_EXT_PREFIX}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class _FileLock:
    """Inter-process exclusive lock with flock: released by the OS if the holder dies (no-op without fcntl)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> _FileLock:
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


def kernel_source() -> str:
    """The one C++ translation unit: the decode kernel, then the prefill kernel (which reuses its helpers)."""
    from neutrino.layers import _cpu_fused_src as fused
    from neutrino.layers.attention import _cpu_decode_src as dec
    from neutrino.layers.attention import _cpu_prefill_src as pre

    versions = f"{dec.KERNEL_VERSION}.{pre.KERNEL_VERSION}.{fused.KERNEL_VERSION}"
    return f"// neutrino kernel versions {versions}\n{dec.SOURCE}\n{pre.SOURCE}\n{fused.SOURCE}"


def _build_and_load():
    from torch.utils.cpp_extension import load

    source = kernel_source()
    name = _extension_name(source)
    root = _cache_root()
    build_dir = root / name
    build_dir.mkdir(parents=True, exist_ok=True)
    src_path = build_dir / f"{name}.cpp"
    t0 = time.perf_counter()
    with _FileLock(root / f"{name}.flock"):
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
            logger.info("compiling the C++ paged attention kernel (one-time, cached in %s)...", build_dir)
        load(
            name=name,
            sources=[str(src_path)],
            extra_cflags=list(_CFLAGS),  # copies: torch appends to these lists
            extra_ldflags=list(_LDFLAGS),
            build_directory=str(build_dir),
            is_python_module=False,  # TORCH_LIBRARY op, loaded with torch.ops.load_library
            verbose=False,
        )
    if fresh:
        logger.info("compiled the C++ paged attention kernel in %.1fs (code path: %s)", time.perf_counter() - t0,
                    torch.ops.neutrino_cpu.isa())
    return torch.ops.neutrino_cpu.paged_decode_attention


def _load():
    global _op, _loaded, _warned, last_error
    with _lock:
        if _op is not _UNSET:
            return _op
        if _disabled():
            last_error = f"disabled by {DISABLE_ENV}"
            _op = None
            return None
        if _loaded is not None:
            _op = _loaded
            return _op
        try:
            _op = _loaded = _build_and_load()
            last_error = None
        except Exception as e:  # noqa: BLE001 - any failure means: use the torch path
            _op = None
            lines = str(e).strip().splitlines() or [""]
            last_error = f"{type(e).__name__}: {' | '.join(lines[-8:])[:3000]}"
            if not _warned:
                _warned = True
                logger.warning("C++ paged attention kernel unavailable, using the torch path (%s)", last_error)
        return _op


def decode_kernel():
    """The compiled decode op, or None when disabled/unavailable. Compiles/loads on the first call only;
    later calls cost a global read."""
    op = _op
    return _load() if op is _UNSET else op


def warmup() -> bool:
    """Compile/load the kernels now (e.g. at engine start) instead of on the first decode step."""
    return decode_kernel() is not None


def reset() -> None:
    """Forget the availability decision (re-reads NEUTRINO_DISABLE_CPP_KERNELS); for tests. A library
    already loaded stays loaded and is reused without rebuilding."""
    global _op, _warned
    with _lock:
        _op = _UNSET
        _warned = False


def paged_decode_attention(
    out: torch.Tensor,  # [B, Hq, D], written; q's dtype
    q: torch.Tensor,  # [B, Hq, D]
    key_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    value_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    block_tables: torch.Tensor,  # [B, max_blocks] int64 or int32
    seq_lens: torch.Tensor,  # [B] int64
    scale: float,
    *,
    force_generic: bool = False,
) -> torch.Tensor | None:
    """Decode attention (one query token per sequence) over the paged cache into `out`; returns `out`, or
    None (out untouched) when the kernel is unavailable. Raises on invalid inputs. A sequence of length 0
    gets zeros. `force_generic` skips the AVX-512 code (for tests)."""
    op = decode_kernel()
    if op is None:
        return None
    op(out, q, key_cache, value_cache, block_tables, seq_lens, float(scale), force_generic)
    return out


def try_decode(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor | None:
    """The backend hook: decode attention with the kernel, or None when the caller should take its torch
    path (not a CPU tensor, unsupported dtype, kernel unavailable, or the kernel raised — logged once)."""
    global _warned
    op = _op
    if op is _UNSET:
        op = _load()
    if (
        op is None
        or q.device.type != "cpu"
        or q.dtype not in _DTYPES
        or key_cache.dtype not in _DTYPES
        or seq_lens.dtype != torch.int64
    ):
        return None
    out = torch.empty(q.shape, dtype=q.dtype)
    try:
        op(out, q, key_cache, value_cache, block_tables, seq_lens, float(scale), False)
    except Exception as e:  # noqa: BLE001 - fall back to torch, which raises if the inputs are truly bad
        if not _warned:
            _warned = True
            logger.warning("C++ paged attention kernel failed, using the torch path (%s: %s)", type(e).__name__, e)
        return None
    return out


def prefill_supported(q: torch.Tensor, key_cache: torch.Tensor) -> bool:
    """Whether the prefill kernel handles these tensors: CPU, bf16 q and cache, a supported head_dim, and a
    build with AVX-512 BF16."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16 or key_cache.dtype != torch.bfloat16:
        return False
    if decode_kernel() is None:
        return False
    head_dim = q.shape[-1]
    if head_dim not in _prefill_head_dims:
        _prefill_head_dims[head_dim] = bool(torch.ops.neutrino_cpu.prefill_supported(head_dim))
    return _prefill_head_dims[head_dim]


def paged_prefill_attention(
    out: torch.Tensor,  # [T, Hq, D] bf16, rows of the listed sequences written
    q: torch.Tensor,  # [T, Hq, D] bf16
    key_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D] bf16, this step's keys already written
    value_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D] bf16
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int64 or int32
    seq_ids: torch.Tensor,  # [P] int64: which sequences to compute
    query_start_loc: torch.Tensor,  # [num_seqs + 1] int64
    seq_lens: torch.Tensor,  # [num_seqs] int64: context length after this step
    scale: float,
) -> torch.Tensor:
    """Causal attention of the query rows of the listed sequences over their paged context (the last
    q_len positions of each context are its queries). Raises on invalid inputs; callers check
    `prefill_supported` first."""
    torch.ops.neutrino_cpu.paged_prefill_attention(
        out, q, key_cache, value_cache, block_tables, seq_ids, query_start_loc, seq_lens, float(scale)
    )
    return out


def fused_supported(x: torch.Tensor, size: int) -> bool:
    """Whether the fused bf16 elementwise ops (`torch.ops.neutrino_cpu.add_rms_norm_`, `rms_norm_out`,
    `rotary_neox_` with size = head_dim / 2, `silu_and_mul_out`) handle a CPU bf16 tensor with rows of
    `size` elements in this build."""
    if x.device.type != "cpu" or x.dtype != torch.bfloat16 or decode_kernel() is None:
        return False
    if size not in _fused_sizes:
        _fused_sizes[size] = bool(torch.ops.neutrino_cpu.fused_supported(size))
    return _fused_sizes[size]
