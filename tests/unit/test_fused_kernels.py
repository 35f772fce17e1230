"""The fused CPU kernels (add + RMSNorm, RMSNorm, rotary, SiLU-and-mul) against the eager ops they
replace, in float32, bfloat16 and float16: same roundings at the same points, so bf16 results are compared
bit for bit and the others to a few units in the last place (the fp32 sum order and exp approximation differ)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neutrino.layers.activation import silu_and_mul
from neutrino.layers.attention import cpu_kernels
from neutrino.layers.norm import RMSNorm
from neutrino.layers.rotary import RotaryEmbedding

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(autouse=True)
def _kernels():
    cpu_kernels.reset()
    if not cpu_kernels.fused_supported(torch.zeros(1, dtype=torch.bfloat16), 16):
        pytest.skip(f"fused kernels unavailable here: {cpu_kernels.last_error or 'no AVX2'}")


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype
    if got.dtype == torch.bfloat16:
        assert torch.equal(got, want)
    else:
        eps = torch.finfo(got.dtype).eps
        torch.testing.assert_close(got.float(), want.float(), rtol=4 * eps, atol=eps)


def _norm(n: int, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> RMSNorm:
    g = torch.Generator().manual_seed(seed)
    norm = RMSNorm(n, 1e-5, dtype)
    norm.weight.data = torch.randn(n, generator=g).to(dtype)
    return norm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 37, 300])
def test_add_rms_norm_matches_eager(tokens, dtype):
    norm = _norm(576, dtype=dtype)
    g = torch.Generator().manual_seed(tokens)
    x, res = torch.randn(tokens, 576, generator=g).to(dtype), (torch.randn(tokens, 576, generator=g) * 4).to(dtype)
    want_res = x + res
    want = norm._norm(want_res)
    xi, ri = x.clone(), res.clone()
    got, got_res = norm(xi, ri)
    assert got.data_ptr() == xi.data_ptr() and got_res.data_ptr() == ri.data_ptr(), "not in place"
    assert torch.equal(got_res, want_res)
    _same(got, want)
    _same(norm(x), norm._norm(x))


def test_norm_reads_strided_rows():
    norm = _norm(64)
    wide = torch.randn(10, 3, 64).bfloat16()
    rows = wide[:, 1]  # [10, 64] with row stride 192
    assert torch.equal(norm(rows), norm._norm(rows))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_matches_eager_in_place_on_strided_views(dtype):
    rot = RotaryEmbedding(64, 256, 10000.0, None, dtype)
    qkv = torch.randn(23, (9 + 3 + 3) * 64).to(dtype)
    q = qkv[:, : 12 * 64].view(23, 12, 64)  # q and k heads: a view with row stride 960, as in the attention layer
    positions = torch.randint(0, 256, (23,))
    cos_sin = rot.cos_sin(positions)
    cos, sin, _ = cos_sin
    x1, x2 = q[..., :32], q[..., 32:]
    want = q * cos + torch.cat((-x2, x1), dim=-1) * sin
    got = rot.apply(q, cos_sin)
    assert got.data_ptr() == qkv.data_ptr()
    _same(got, want)


def test_rotary_rejects_positions_outside_the_table():
    rot = RotaryEmbedding(64, 16, 10000.0, None, torch.bfloat16)
    with pytest.raises(RuntimeError, match="outside the rotary table"):
        torch.ops.neutrino_cpu.rotary_neox_(torch.zeros(2, 1, 64, dtype=torch.bfloat16), rot.cos, rot.sin,
                                            torch.tensor([3, 16]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 64])
def test_silu_and_mul_matches_eager(tokens, dtype):
    x = (torch.randn(tokens, 2 * 1536) * 3).to(dtype)
    x[0, :8] = torch.tensor([-200.0, -90.0, -60.0, 0.0, 30.0, 60.0, 90.0, 200.0])  # past exp's clamps
    gate, up = x.chunk(2, dim=-1)
    _same(silu_and_mul(x), F.silu(gate) * up)


def test_mixed_dtypes_are_rejected_with_the_dtypes_named():
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.neutrino_cpu.rms_norm_out(torch.empty_like(x), x, torch.ones(64, dtype=torch.bfloat16), 1e-5)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        torch.ops.neutrino_cpu.silu_and_mul_out(torch.empty(2, 32, dtype=torch.float64), x.double())


def test_other_dtypes_and_sizes_take_the_eager_path():
    norm64 = RMSNorm(576, 1e-5, torch.float64)
    x, res = torch.randn(5, 576, dtype=torch.float64), torch.randn(5, 576, dtype=torch.float64)
    got, got_res = norm64(x.clone(), res.clone())
    assert torch.equal(got_res, x + res) and torch.equal(got, norm64._norm(x + res))
    odd = _norm(20)  # not a multiple of 8
    y = torch.randn(3, 20).bfloat16()
    assert torch.equal(odd(y), odd._norm(y))
    assert not cpu_kernels.fused_supported(y, 20) and cpu_kernels.fused_supported(y, 24)
