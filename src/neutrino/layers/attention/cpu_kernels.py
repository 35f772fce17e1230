"""JIT-compiled C++ kernels for CPU, with a fallback to the torch path when they can't be built.

One library holds the paged decode- and prefill-attention kernels and the fused bf16 elementwise kernels
(`layers/_cpu_fused_src.py`: add + RMSNorm, rotary, SiLU-and-mul).

The paged decode kernel (source in `_cpu_decode_src.py`, registered as the torch op
`torch.ops.neutrino_cpu.paged_decode_attention`) is compiled on first use, never at import time, or by
an explicit `warmup()`; `layers/jit.py` builds, caches and locks it.

Failure of any kind (no compiler, no ninja, compile error, load error) logs one warning and makes
`decode_kernel()` return None, so callers use their torch path. NEUTRINO_DISABLE_CPP_KERNELS=1 skips the
kernels entirely (read on first use; `reset()` re-reads it).
"""

from __future__ import annotations

import logging
import threading

import torch

from neutrino.layers import jit

logger = logging.getLogger(__name__)

DISABLE_ENV = jit.DISABLE_ENV
_EXT_PREFIX = "neutrino_cpu_attn"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_UNSET = object()
_op = _UNSET  # torch.ops.neutrino_cpu.paged_decode_attention, None when unavailable, _UNSET before first use
_loaded = None  # the op once loaded (a library loads once per process; reset() keeps it)
_lock = threading.Lock()
_warned = False
_prefill_head_dims: dict[int, bool] = {}  # head_dim -> the prefill kernel supports it (this build)
_fused_sizes: dict[int, bool] = {}  # row size -> the fused elementwise kernels support it (this build)
last_error: str | None = None  # why the kernel is unavailable (for logs and test skip reasons)


def kernel_source() -> str:
    """The one C++ translation unit: the decode kernel, then the prefill kernel (which reuses its helpers)."""
    from neutrino.layers import _cpu_fused_src as fused
    from neutrino.layers.attention import _cpu_decode_src as dec
    from neutrino.layers.attention import _cpu_prefill_src as pre

    versions = f"{dec.KERNEL_VERSION}.{pre.KERNEL_VERSION}.{fused.KERNEL_VERSION}"
    return f"// neutrino kernel versions {versions}\n{dec.SOURCE}\n{pre.SOURCE}\n{fused.SOURCE}"


def _build_and_load():
    fresh = jit.build_library(_EXT_PREFIX, kernel_source(), "paged attention kernels")
    if fresh:
        logger.info("attention kernel code path: %s", torch.ops.neutrino_cpu.isa())
    return torch.ops.neutrino_cpu.paged_decode_attention


def _load():
    global _op, _loaded, _warned, last_error
    with _lock:
        if _op is not _UNSET:
            return _op
        if jit.disabled():
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
