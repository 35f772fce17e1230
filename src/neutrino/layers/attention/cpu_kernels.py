"""The C++ attention and fused elementwise kernels for CPU (`torch.ops.neutrino_cpu`), compiled at install.

One library (`neutrino/_kernels_<variant>.so`, sources in `neutrino/csrc`, loaded by
`neutrino/kernels/loader.py`) holds the paged decode- and prefill-attention kernels and the fused
elementwise kernels (add + RMSNorm, rotary, SiLU-and-mul). It is loaded on first use or by `warmup()`.

When it can't be loaded (not built, a CPU without AVX2, `NEUTRINO_DISABLE_CPP_KERNELS=1`) the loader
says why once and `decode_kernel()` returns None, so callers use their torch paths.
"""

from __future__ import annotations

import logging

import torch

from neutrino.kernels import loader

logger = logging.getLogger(__name__)

DISABLE_ENV = loader.DISABLE_ENV
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_warned = False
_prefill_head_dims: dict[int, bool] = {}  # head_dim -> the prefill kernel supports it (this build)
_fused_sizes: dict[tuple[torch.dtype, int], bool] = {}  # (dtype, row size) -> the fused ops handle it (this build)


def __getattr__(name: str):
    if name == "last_error":  # why the kernels are unavailable (for logs and test skip reasons)
        return loader.last_error
    raise AttributeError(name)


_op = None  # torch.ops.neutrino_cpu.paged_decode_attention once loaded
_decided = False  # whether _op says the final word (reset() clears it)


def _load():
    global _op, _decided
    if not _decided:
        _op = None if loader.load() is None else torch.ops.neutrino_cpu.paged_decode_attention
        _decided = True
    return _op


def decode_kernel():
    """The decode op, or None when disabled/unavailable (loads the library on the first call)."""
    return _load()


def warmup() -> bool:
    """Load the kernels now (e.g. at engine start, which logs the variant) instead of on the first step."""
    return decode_kernel() is not None


def reset() -> None:
    """Forget the availability decision (re-reads NEUTRINO_DISABLE_CPP_KERNELS); for tests. A library
    already loaded stays loaded and is reused."""
    global _warned, _decided
    loader.reset()
    _warned = _decided = False
    _fused_sizes.clear()


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
    """Whether the fused elementwise ops (`torch.ops.neutrino_cpu.add_rms_norm_`, `rms_norm_out`,
    `rotary_neox_` with size = head_dim / 2, `silu_and_mul_out`) handle a CPU float32, bfloat16 or
    float16 tensor with rows of `size` elements in this build (every variant: the kernels need AVX2)."""
    key = (x.dtype, size)
    ok = _fused_sizes.get(key)
    if ok is None:
        ok = x.dtype in _DTYPES and decode_kernel() is not None and bool(torch.ops.neutrino_cpu.fused_supported(size))
        _fused_sizes[key] = ok
    return ok and x.is_cpu
