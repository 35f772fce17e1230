"""The C++ paged decode-attention kernel (neutrino.layers.attention.cpu_kernels) against the torch path.

The kernel is compiled at install (neutrino/csrc, one library per ISA variant); kernel tests skip, with
the loader's reason, where no variant can be loaded.
"""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import pytest
import torch

from neutrino.kernels import loader
from neutrino.layers.attention import cpu_kernels
from neutrino.layers.attention.backend import TorchPagedAttention
from neutrino.layers.attention.metadata import AttentionMetadata


@pytest.fixture(autouse=True)
def _fresh_kernel_state(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(cpu_kernels.DISABLE_ENV, raising=False)
    cpu_kernels.reset()
    yield
    monkeypatch.undo()
    cpu_kernels.reset()


@pytest.fixture
def op():
    kernel = cpu_kernels.decode_kernel()
    if kernel is None:
        pytest.skip(f"C++ paged attention kernel unavailable on this machine: {cpu_kernels.last_error}")
    return kernel


def make_case(lens, hq, hkv, d, dtype, block_size=16, seed=0, table_dtype=torch.int64, q_scale=1.0):
    """Random paged cache with shuffled block tables (padded with 0, as the runner does)."""
    g = torch.Generator().manual_seed(seed)
    max_blocks = max(-(-n // block_size) for n in lens) + 1
    num_blocks = len(lens) * max_blocks + 3
    kv = torch.randn(2, num_blocks, block_size, hkv, d, generator=g).to(dtype)
    perm = torch.randperm(num_blocks, generator=g)
    tables = torch.zeros(len(lens), max_blocks, dtype=torch.int64)
    used = 0
    for i, n in enumerate(lens):
        nb = -(-n // block_size)
        tables[i, :nb] = perm[used:used + nb]
        used += nb
    q = (torch.randn(len(lens), hq, d, generator=g) * q_scale).to(dtype)
    meta = SimpleNamespace(seq_lens=list(lens), block_size=block_size, block_tables=tables.to(table_dtype),
                           seq_lens_tensor=torch.tensor(lens, dtype=torch.int64))
    return q, kv, meta


def reference(q, kv, meta, scale):
    """Exact attention in float64 over the torch path."""
    meta64 = SimpleNamespace(**{**vars(meta), "block_tables": meta.block_tables.long()})
    return TorchPagedAttention()._decode_torch(q.double(), kv[0].double(), kv[1].double(), meta64, scale)


def run_kernel(q, kv, meta, scale, force_generic=False):
    out = torch.empty_like(q)
    assert cpu_kernels.paged_decode_attention(out, q, kv[0], kv[1], meta.block_tables, meta.seq_lens_tensor, scale,
                                              force_generic=force_generic) is out
    return out


TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}  # vs the float64 reference
LENS = [[1], [15, 16, 17], [300, 1, 16, 33], [5, 300, 2, 64, 17, 1, 31]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("heads", [(4, 4), (9, 3), (8, 2)], ids=lambda h: f"hq{h[0]}-hkv{h[1]}")
@pytest.mark.parametrize("head_dim", [64, 128])
def test_matches_reference(op, dtype, heads, head_dim):
    hq, hkv = heads
    scale = head_dim**-0.5
    for i, lens in enumerate(LENS):
        q, kv, meta = make_case(lens, hq, hkv, head_dim, dtype, seed=i,
                                table_dtype=torch.int32 if i % 2 else torch.int64)
        ref = reference(q, kv, meta, scale)
        out = run_kernel(q, kv, meta, scale)
        assert out.dtype == dtype
        assert (out.double() - ref).abs().max().item() < TOL[dtype], lens
        # and against the torch path in the same dtype (itself less exact: it rounds probs to dtype)
        meta64 = SimpleNamespace(**{**vars(meta), "block_tables": meta.block_tables.long()})
        torch_out = TorchPagedAttention()._decode_torch(q, kv[0], kv[1], meta64, scale)
        assert (out.float() - torch_out.float()).abs().max().item() < 3 * TOL[dtype], lens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("head_dim,block_size", [(64, 16), (40, 16), (80, 8), (16, 32), (32, 1)])
def test_generic_and_odd_shapes(op, dtype, head_dim, block_size):
    """The portable (non-AVX-512) code and head dims / block sizes off the fast path."""
    q, kv, meta = make_case([1, 7, 37, 100], 12, 3, head_dim, dtype, block_size=block_size)
    scale = head_dim**-0.5
    ref = reference(q, kv, meta, scale)
    for force_generic in (False, True):
        out = run_kernel(q, kv, meta, scale, force_generic=force_generic)
        assert (out.double() - ref).abs().max().item() < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_large_scores_and_rising_max(op, dtype):
    """Peaked softmax, and scores that keep growing along the sequence (exercises the online rescaling)."""
    q, kv, meta = make_case([300, 129, 1000], 9, 3, 64, dtype, q_scale=8.0)
    pos = torch.arange(kv.shape[2], dtype=torch.float32)
    kv[0] = (kv[0].float() + 0.05 * pos[None, :, None, None]).to(dtype)  # rising with the in-block position
    ref = reference(q, kv, meta, 0.125)
    for force_generic in (False, True):
        out = run_kernel(q, kv, meta, 0.125, force_generic=force_generic)
        assert (out.double() - ref).abs().max().item() < TOL[dtype] * 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_long_sequences_threads_and_batch_invariance(op, dtype):
    """Long sequences (split into parts that are merged) at 1 and 2 threads; a sequence's output is
    bitwise the same alone or in a batch, at any thread count."""
    lens = [2000, 700, 3, 300]
    q, kv, meta = make_case(lens, 9, 3, 64, dtype, seed=3)
    ref = reference(q, kv, meta, 0.125)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = run_kernel(q, kv, meta, 0.125)
            assert (out.double() - ref).abs().max().item() < TOL[dtype]
            outs.append(out)
            for i in (0, 3):  # sequence i alone
                alone = SimpleNamespace(seq_lens=[lens[i]], block_size=16, block_tables=meta.block_tables[i:i + 1],
                                        seq_lens_tensor=meta.seq_lens_tensor[i:i + 1])
                assert torch.equal(run_kernel(q[i:i + 1], kv, alone, 0.125)[0], out[i])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1])


def test_strided_q_and_empty_sequence(op):
    q, kv, meta = make_case([0, 20], 4, 2, 64, torch.float32)
    wide = torch.randn(2, 4, 3 * 64)
    q_view = wide[:, :, 64:128]  # non-contiguous rows, contiguous head_dim
    q_view.copy_(q)
    out = run_kernel(q_view, kv, meta, 0.125)
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # no context: zeros (the torch path gives NaN)
    assert (out[1].double() - reference(q, kv, meta, 0.125)[1]).abs().max().item() < 2e-5


def test_rejects_bad_inputs(op):
    q, kv, meta = make_case([20, 40], 4, 2, 64, torch.float32)
    out = torch.empty_like(q)
    bad = meta.block_tables.clone()
    bad[1, 1] = kv.shape[1]  # out of range
    with pytest.raises(RuntimeError, match="out of range"):
        op(out, q, kv[0], kv[1], bad, meta.seq_lens_tensor, 0.125, False)
    with pytest.raises(RuntimeError, match="does not fit"):
        op(out, q, kv[0], kv[1], meta.block_tables, torch.tensor([20, 10_000]), 0.125, False)
    with pytest.raises(RuntimeError, match="multiple"):
        op(out[:, :3], q[:, :3], kv[0], kv[1], meta.block_tables, meta.seq_lens_tensor, 0.125, False)


def _decode_meta(lens, tables, block_size):
    slots = [int(tables[i, (n - 1) // block_size]) * block_size + (n - 1) % block_size for i, n in enumerate(lens)]
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots), query_start_loc=list(range(len(lens) + 1)), seq_lens=list(lens),
        block_tables=tables, seq_lens_tensor=torch.tensor(lens), block_size=block_size, decode_only=True)


def _backend_decode(dtype=torch.bfloat16):
    """One decode step through TorchPagedAttention.forward (writes the new K/V, then attends)."""
    lens = [33, 1, 300, 16]
    q, kv, meta = make_case(lens, 9, 3, 64, dtype, seed=7)
    g = torch.Generator().manual_seed(8)
    k, v = (torch.randn(len(lens), 3, 64, generator=g).to(dtype) for _ in range(2))
    return TorchPagedAttention().forward(q, k, v, kv, _decode_meta(lens, meta.block_tables, 16), 0.125)


def test_backend_uses_kernel_and_matches_torch_path(op, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = cpu_kernels.try_decode
    monkeypatch.setattr(cpu_kernels, "try_decode", lambda *a: calls.append(1) or real(*a))
    with_kernel = _backend_decode()
    assert calls and calls[-1] == 1
    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "1")
    cpu_kernels.reset()
    with_torch = _backend_decode()
    assert (with_kernel.float() - with_torch.float()).abs().max().item() < 3e-2


def test_disabled_by_env_var(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "1")
    monkeypatch.setattr(loader, "_loaded", None)
    monkeypatch.setattr(loader, "_load_library", lambda: pytest.fail("must not load when disabled"))
    cpu_kernels.reset()
    assert cpu_kernels.decode_kernel() is None and not cpu_kernels.warmup()
    q, kv, meta = make_case([5], 4, 2, 64, torch.float32)
    assert cpu_kernels.paged_decode_attention(torch.empty_like(q), q, kv[0], kv[1], meta.block_tables,
                                              meta.seq_lens_tensor, 0.125) is None
    out = _backend_decode(torch.float32)  # torch path
    assert out.shape == (4, 9, 64) and torch.isfinite(out).all()


def test_missing_library_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, tmp_path, caplog):
    monkeypatch.delenv(loader.ISA_ENV, raising=False)
    monkeypatch.setattr(loader, "_loaded", None)
    monkeypatch.setattr(loader, "PACKAGE_DIR", tmp_path)  # nothing built there
    monkeypatch.setattr(loader, "cpu_flags", lambda: {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"})
    cpu_kernels.reset()
    with caplog.at_level(logging.WARNING, logger=loader.__name__):
        for _ in range(3):
            out = _backend_decode(torch.float32)
    assert torch.isfinite(out).all()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no compiled kernel variant" in warnings[0].getMessage()
    assert "avx2" in warnings[0].getMessage() and str(tmp_path) in warnings[0].getMessage()
    assert "no compiled kernel variant" in cpu_kernels.last_error


def test_kernel_speed_smoke(op):
    """Not a benchmark: the kernel must not be slower than the gather-based torch path it replaces."""
    import time

    random.seed(0)
    lens = [random.randint(64, 400) for _ in range(32)]
    q, kv, meta = make_case(lens, 9, 3, 64, torch.float32)
    backend = TorchPagedAttention()

    def best(fn, reps=5):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_kernel = best(lambda: run_kernel(q, kv, meta, 0.125))
    t_torch = best(lambda: backend._decode_torch(q, kv[0], kv[1], meta, 0.125))
    assert t_kernel < t_torch
