"""The C++ paged prefill-attention kernel (bf16, AVX-512 BF16) against exact attention and the SDPA path.

Skips where the kernel can't be built or the CPU lacks AVX-512 BF16 (it then never runs: the backend
checks `cpu_kernels.prefill_supported`).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neutrino.layers.attention import cpu_kernels
from neutrino.layers.attention.backend import TorchPagedAttention
from neutrino.layers.attention.metadata import AttentionMetadata

# bf16 inputs, fp32 softmax/accumulation, probabilities rounded to bf16 for P V: the error against exact
# attention of the same bf16 inputs is a few bf16 ulps of outputs of magnitude ~1.
TOL = 2e-2


@pytest.fixture(autouse=True)
def _kernel():
    cpu_kernels.reset()
    if cpu_kernels.decode_kernel() is None:
        pytest.skip(f"C++ attention kernels unavailable: {cpu_kernels.last_error}")
    probe = torch.zeros(1, 1, 64, dtype=torch.bfloat16)
    if not cpu_kernels.prefill_supported(probe, probe):
        pytest.skip("this build of the kernels has no AVX-512 BF16 prefill path")


def make_case(lens, q_lens, hq, hkv, d, block_size, seed=0):
    """A shuffled paged cache holding every sequence's context, and the query rows (the last q_len
    positions of each context) packed one sequence after another."""
    g = torch.Generator().manual_seed(seed)
    nblocks = [-(-n // block_size) for n in lens]
    num_blocks = sum(nblocks) + 2
    kv = torch.randn(2, num_blocks, block_size, hkv, d, generator=g).bfloat16()
    perm = torch.randperm(num_blocks - 1, generator=g) + 1
    tables = torch.zeros(len(lens), max(nblocks) + 1, dtype=torch.int64)
    used = 0
    for i, n in enumerate(nblocks):
        tables[i, :n] = perm[used:used + n]
        used += n
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    q = torch.randn(qsl[-1], hq, d, generator=g).bfloat16()
    return q, kv, tables, qsl


def exact(q, kv, tables, qsl, lens, scale):
    """Causal attention in float64 from the gathered context of each sequence."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    bs = kv.shape[2]
    for s, n in enumerate(lens):
        rows = slice(qsl[s], qsl[s + 1])
        nb = -(-n // bs)
        k, v = (kv[i][tables[s, :nb]].flatten(0, 1)[:n].double() for i in (0, 1))  # [n, Hkv, D]
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = torch.einsum("qhd,khd->hqk", q[rows].double(), k) * scale
        q_pos = torch.arange(n - (qsl[s + 1] - qsl[s]), n)[:, None]
        scores = scores.masked_fill(torch.arange(n)[None] > q_pos, float("-inf"))
        out[rows] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
    return out


def run(q, kv, tables, qsl, lens, scale, seq_ids=None):
    out = torch.zeros_like(q)
    ids = list(range(len(lens))) if seq_ids is None else seq_ids
    cpu_kernels.paged_prefill_attention(out, q, kv[0], kv[1], tables, torch.tensor(ids), torch.tensor(qsl),
                                        torch.tensor(lens), scale)
    return out


@pytest.mark.parametrize(
    "hq,hkv,d,block_size",
    [(9, 3, 64, 16), (4, 4, 128, 8), (8, 2, 32, 32), (2, 1, 256, 16), (6, 2, 96, 16)],
)
def test_matches_exact_attention(hq, hkv, d, block_size):
    # full prefill, a chunk after a cached prefix, exactly one tile, one row, a short chunk past a block edge
    lens, q_lens = [37, 300, 16, 5, 129], [37, 41, 16, 1, 3]
    q, kv, tables, qsl = make_case(lens, q_lens, hq, hkv, d, block_size)
    scale = d**-0.5
    err = (run(q, kv, tables, qsl, lens, scale).double() - exact(q, kv, tables, qsl, lens, scale)).abs().max()
    assert err < TOL, f"max abs error {err:.4g}"


def test_rows_do_not_depend_on_batch_chunking_or_threads():
    """Bitwise: a sequence alone == in a batch; a prompt in chunks == in one go; 1 thread == 2 threads."""
    lens, q_lens = [200, 77, 140], [200, 77, 140]
    q, kv, tables, qsl = make_case(lens, q_lens, 9, 3, 64, 16, seed=1)
    scale = 0.125
    batch = run(q, kv, tables, qsl, lens, scale)
    alone = run(q[qsl[1]:qsl[2]], kv, tables[1:2], [0, 77], [77], scale)
    assert torch.equal(alone, batch[qsl[1]:qsl[2]])
    # the first sequence in chunks of 64, 64 and 72 query rows over a growing context
    chunks = [run(q[a:b], kv, tables[:1], [0, b - a], [b], scale) for a, b in ((0, 64), (64, 128), (128, 200))]
    assert torch.equal(torch.cat(chunks), batch[:200])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run(q, kv, tables, qsl, lens, scale)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, batch)


def test_only_listed_sequences_are_written():
    lens, q_lens = [40, 50], [40, 50]
    q, kv, tables, qsl = make_case(lens, q_lens, 4, 2, 64, 16)
    out = run(q, kv, tables, qsl, lens, 0.125, seq_ids=[1])
    assert torch.count_nonzero(out[:40]) == 0 and torch.count_nonzero(out[40:]) > 0


def test_bad_metadata_raises_instead_of_reading_out_of_bounds():
    lens, q_lens = [40], [40]
    q, kv, tables, qsl = make_case(lens, q_lens, 4, 2, 64, 16)
    tables[0, 1] = 10_000
    with pytest.raises(RuntimeError, match="out of range"):
        run(q, kv, tables, qsl, lens, 0.125)
    with pytest.raises(RuntimeError, match="does not fit"):
        run(q, kv, tables, qsl, [30], 0.125)  # context shorter than its 40 query rows


def test_backend_uses_kernel_and_agrees_with_sdpa():
    """A mixed batch (prefill, chunk, decode) through the backend in bf16 vs the same backend with the
    prefill kernel switched off (per-sequence SDPA)."""
    from neutrino.runner.input_batch import _split_decodes

    lens, q_lens = [90, 130, 33], [90, 50, 1]
    hq, hkv, d, bs = 6, 2, 64, 16
    q, kv, tables, qsl = make_case(lens, q_lens, hq, hkv, d, bs, seed=3)
    slots = []  # rewrite each query position's own K/V (same values) to exercise the slot mapping
    for s, n in enumerate(lens):
        for pos in range(n - q_lens[s], n):
            slots.append(int(tables[s, pos // bs]) * bs + pos % bs)
    slot_mapping = torch.tensor(slots)
    k_new = kv[0].view(-1, hkv, d)[slot_mapping].clone()
    v_new = kv[1].view(-1, hkv, d)[slot_mapping].clone()
    meta = AttentionMetadata(slot_mapping, qsl, lens, tables, torch.tensor(lens), bs, False)
    _split_decodes(meta, tables, torch.device("cpu"))
    backend = TorchPagedAttention()
    with_kernel = backend.forward(q, k_new, v_new, kv.clone(), meta, 0.125)
    meta.prefill_seq_ids = None  # the SDPA path
    with_sdpa = backend.forward(q, k_new, v_new, kv.clone(), meta, 0.125)
    assert (with_kernel.float() - with_sdpa.float()).abs().max() < TOL
    ref = exact(q, kv, tables, qsl, lens, 0.125)
    assert (with_kernel.double() - ref).abs().max() < TOL


def test_sdpa_reference_error_is_of_the_same_order():
    """Sanity of TOL: PyTorch's own bf16 flash path is about as far from exact attention as the kernel."""
    lens = [256]
    q, kv, tables, qsl = make_case(lens, lens, 9, 3, 64, 16, seed=4)
    ref = exact(q, kv, tables, qsl, lens, 0.125)
    k, v = (kv[i][tables[0, :16]].flatten(0, 1) for i in (0, 1))
    sdpa = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                          v.transpose(0, 1)[None], is_causal=True, scale=0.125,
                                          enable_gqa=True)[0].transpose(0, 1)
    err_sdpa = (sdpa.double() - ref).abs().max()
    err_kernel = (run(q, kv, tables, qsl, lens, 0.125).double() - ref).abs().max()
    assert err_kernel < max(2 * err_sdpa, 1e-2), (err_kernel, err_sdpa)
