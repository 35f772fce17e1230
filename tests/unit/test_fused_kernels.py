"""The fused bf16 CPU kernels (add + RMSNorm, RMSNorm, rotary, SiLU-and-mul) against the eager ops they
replace: same roundings at the same points, so the results are compared bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neutrino.layers.activation import silu_and_mul
from neutrino.layers.attention import cpu_kernels
from neutrino.layers.norm import RMSNorm
from neutrino.layers.rotary import RotaryEmbedding


@pytest.fixture(autouse=True)
def _kernels():
    cpu_kernels.reset()
    if not cpu_kernels.fused_supported(torch.zeros(1, dtype=torch.bfloat16), 16):
        pytest.skip(f"fused bf16 kernels unavailable here: {cpu_kernels.last_error or 'no AVX-512 BF16'}")


def _norm(n: int, seed: int = 0) -> RMSNorm:
    g = torch.Generator().manual_seed(seed)
    norm = RMSNorm(n, 1e-5, torch.bfloat16)
    norm.weight.data = torch.randn(n, generator=g).bfloat16()
    return norm


@pytest.mark.parametrize("tokens", [1, 37, 300])
def test_add_rms_norm_matches_eager(tokens):
    norm = _norm(576)
    g = torch.Generator().manual_seed(tokens)
    x, res = torch.randn(tokens, 576, generator=g).bfloat16(), (torch.randn(tokens, 576, generator=g) * 4).bfloat16()
    want_res = x + res
    want = norm._norm(want_res)
    xi, ri = x.clone(), res.clone()
    got, got_res = norm(xi, ri)
    assert got.data_ptr() == xi.data_ptr() and got_res.data_ptr() == ri.data_ptr(), "not in place"
    assert torch.equal(got_res, want_res)
    assert torch.equal(got, want)
    assert torch.equal(norm(x), norm._norm(x))


def test_norm_reads_strided_rows():
    norm = _norm(64)
    wide = torch.randn(10, 3, 64).bfloat16()
    rows = wide[:, 1]  # [10, 64] with row stride 192
    assert torch.equal(norm(rows), norm._norm(rows))


def test_rotary_matches_eager_in_place_on_strided_views():
    rot = RotaryEmbedding(64, 256, 10000.0, None, torch.bfloat16)
    qkv = torch.randn(23, (9 + 3 + 3) * 64).bfloat16()
    q = qkv[:, : 9 * 64].view(23, 9, 64)  # a view with row stride 960, as in the attention layer
    positions = torch.randint(0, 256, (23,))
    cos_sin = rot.cos_sin(positions)
    cos, sin, _ = cos_sin
    x1, x2 = q[..., :32], q[..., 32:]
    want = q * cos + torch.cat((-x2, x1), dim=-1) * sin
    got = rot.apply(q, cos_sin)
    assert got.data_ptr() == qkv.data_ptr()
    assert torch.equal(got, want)


def test_rotary_rejects_positions_outside_the_table():
    rot = RotaryEmbedding(64, 16, 10000.0, None, torch.bfloat16)
    with pytest.raises(RuntimeError, match="outside the rotary table"):
        torch.ops.neutrino_cpu.rotary_neox_(torch.zeros(2, 1, 64, dtype=torch.bfloat16), rot.cos, rot.sin,
                                            torch.tensor([3, 16]))


@pytest.mark.parametrize("tokens", [1, 64])
def test_silu_and_mul_matches_eager(tokens):
    x = (torch.randn(tokens, 2 * 1536) * 3).bfloat16()
    gate, up = x.chunk(2, dim=-1)
    assert torch.equal(silu_and_mul(x), F.silu(gate) * up)


def test_other_dtypes_and_sizes_take_the_eager_path():
    norm32 = RMSNorm(576, 1e-5, torch.float32)
    x, res = torch.randn(5, 576), torch.randn(5, 576)
    got, got_res = norm32(x.clone(), res.clone())
    assert torch.equal(got_res, x + res) and torch.equal(got, norm32._norm(x + res))
    odd = _norm(24)  # not a multiple of 16
    y = torch.randn(3, 24).bfloat16()
    assert torch.equal(odd(y), odd._norm(y))
