"""Weight quantization: RTN exactness and the checkpoint format round trip, exact reproduction of Q4_1
blocks (synthetic and SmolLM2's), GPTQ against RTN on a real calibration batch of a tiny model."""

from __future__ import annotations

import pytest
import torch

from neutrino.compression.quantize.gptq import gptq_quantize
from neutrino.compression.quantize.grid import QuantGrid, dequantize_tensors, pack_codes, unpack_codes
from neutrino.compression.quantize.rtn import quantize_rtn
from neutrino.errors import ConfigError
from neutrino.layers.quant.config import QuantConfig

GRIDS = [QuantGrid(b, g, s) for b in (3, 4, 8) for g in (-1, 32) for s in (True, False)]


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"b{g.bits}-g{g.group_size}-{'sym' if g.symmetric else 'asym'}")
def test_rtn_within_half_a_step_and_format_round_trip(grid: QuantGrid) -> None:
    torch.manual_seed(0)
    w = torch.randn(24, 128) * torch.rand(24, 1) * 3
    w[3, :32] = 0.7  # a constant group (zero range)
    qw = quantize_rtn(w, grid)
    assert qw.codes.dtype == torch.uint8 and int(qw.codes.max()) <= grid.maxq
    g = qw.scales.shape[1]
    assert g == (1 if grid.group_size == -1 else 128 // grid.group_size)
    step = qw.scales.repeat_interleave(128 // g, dim=1)
    err = (qw.dequantize() - w).abs()
    assert bool((err <= step / 2 * (1 + 1e-5) + 1e-7).all())
    tensors = qw.tensors("p")
    assert set(tensors) == {"p.qweight", "p.scales"} | (set() if grid.symmetric else {"p.zeros"})
    assert tensors["p.qweight"].shape == ((24, 128) if grid.bits == 8 else (24, 64))
    expected_dtype = torch.int8 if grid.bits == 8 and grid.symmetric else torch.uint8
    assert tensors["p.qweight"].dtype == expected_dtype
    assert torch.equal(unpack_codes(pack_codes(qw.codes, grid), grid.bits, grid.symmetric), qw.codes.to(torch.int16))
    dense = dequantize_tensors(tensors["p.qweight"], tensors["p.scales"], tensors.get("p.zeros"), grid.bits,
                               grid.symmetric)
    torch.testing.assert_close(dense, qw.dequantize(), rtol=0, atol=0)


def test_mse_range_search_never_increases_the_error() -> None:
    torch.manual_seed(2)
    w = torch.randn(16, 4, 32) ** 3  # heavy tails: clipping helps
    for grid in (QuantGrid(4, 32, True), QuantGrid(3, 32, False)):
        plain = (grid.fake(w, *(p[..., None] for p in grid.params(w))) - w).abs().pow(2.4).sum(-1)
        searched = (grid.fake(w, *(p[..., None] for p in grid.params_mse(w))) - w).abs().pow(2.4).sum(-1)
        assert bool((searched <= plain * (1 + 1e-6)).all()) and float(searched.sum()) < 0.95 * float(plain.sum())


def test_nibble_layout_and_int8_sign() -> None:
    codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    assert pack_codes(codes, QuantGrid(4)).tolist() == [[0x21, 0x0F]]  # element 2j low, 2j+1 high
    assert pack_codes(torch.tensor([[1, 128, 255]], dtype=torch.uint8), QuantGrid(8)).tolist() == [[-127, 0, 127]]


def test_quant_config_round_trip() -> None:
    qc = QuantConfig(bits=4, group_size=64, symmetric=False, method="gptq", ignore=("lm_head", "model.embed_tokens"),
                     sparsity={"method": "wanda", "target": 0.5, "pattern": "2:4"}, extra={"damp": 0.01})
    assert QuantConfig.from_dict(qc.to_dict()) == qc


def test_group_size_must_divide() -> None:
    with pytest.raises(ConfigError, match="group_size 48 does not divide in_features 64"):
        quantize_rtn(torch.randn(4, 64), QuantGrid(4, 48))


def test_asymmetric_g32_reproduces_q4_1_blocks() -> None:
    torch.manual_seed(1)
    d, m = torch.rand(16, 4) * 0.02 + 1e-3, torch.randn(16, 4) * 0.05
    q = torch.randint(0, 16, (16, 4, 32)).float()
    q[..., 0], q[..., 1] = 0, 15  # llama.cpp's Q4_1 maps each block's min to 0 and max to 15
    w = (q * d[..., None] + m[..., None]).view(16, 128)
    torch.testing.assert_close(quantize_rtn(w, QuantGrid(4, 32, symmetric=False)).dequantize(), w, rtol=0, atol=2e-7)


def test_smollm2_linear_is_reproduced_by_asymmetric_g32(smollm2_dir) -> None:
    from safetensors import safe_open

    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as f:
        w = f.get_tensor("model.layers.3.mlp.down_proj.weight")
    err = (quantize_rtn(w, QuantGrid(4, 32, symmetric=False)).dequantize() - w).abs().max()
    assert float(err) < 1e-6 * float(w.abs().max())


@pytest.fixture(scope="module")
def calib_stats(tiny_checkpoint):
    """Input statistics of layer 0's groups of a tiny Llama on a real lee_background batch."""
    from transformers import AutoTokenizer

    from neutrino.compression.calibration import calibration_batch
    from neutrino.compression.layerwise import capture_inputs, load_model, stats_for_layer
    from neutrino.compression.stats import StatsSpec

    path = tiny_checkpoint("llama", tokenizer=True)
    model = load_model(path, progress=False)
    ids = calibration_batch(AutoTokenizer.from_pretrained(path), 8, 64).input_ids
    hidden, kwargs = capture_inputs(model, ids)
    stats = stats_for_layer(model.model.layers[0], hidden, kwargs, StatsSpec(hessian=True, max_rows=512))
    return model, stats


def _output_error(w: torch.Tensor, q: torch.Tensor, hessian: torch.Tensor) -> float:
    d = (w - q).double()
    return float(torch.einsum("nk,kl,nl->", d, hessian.double(), d))  # = 2/T ||X W^T - X Q^T||^2


@pytest.mark.parametrize(("bits", "group", "act_order", "mse"), [(4, 32, False, False), (3, 32, False, True),
                                                                (3, -1, True, False), (4, 32, True, True)])
def test_gptq_beats_rtn_on_layer_outputs(calib_stats, bits: int, group: int, act_order: bool, mse: bool) -> None:
    model, stats = calib_stats
    grid = QuantGrid(bits, group, symmetric=True)
    for rel, prev in (("self_attn.q_proj", "input_layernorm"), ("mlp.down_proj", "mlp.up_proj")):
        w = model.model.layers[0].get_submodule(rel).weight
        h = stats[prev].hessian
        rtn = _output_error(w, quantize_rtn(w, grid).dequantize(), h)
        gptq = gptq_quantize(w, h, grid, act_order=act_order, mse=mse)
        assert int(gptq.codes.max()) <= grid.maxq
        assert _output_error(w, gptq.dequantize(), h) < 0.9 * rtn, rel


def test_gptq_keeps_a_pruning_mask(calib_stats) -> None:
    model, stats = calib_stats
    w = model.model.layers[0].mlp.gate_proj.weight
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    for grid in (QuantGrid(4, 32, True), QuantGrid(4, 32, False, integer_zero=True)):
        dq = gptq_quantize(w.masked_fill(mask, 0), stats["post_attention_layernorm"].hessian, grid, mask=mask)
        assert bool((dq.dequantize()[mask] == 0).all())


def test_weighted_range_search_minimises_the_weighted_error() -> None:
    """With per-column weights (GPTQ's hessian_mse) the search trades error on light columns for error on
    heavy ones: its weighted error is never above the unweighted search's, and clearly below here."""
    torch.manual_seed(3)
    w = torch.randn(32, 2, 32) ** 3
    weights = torch.rand(2, 32) ** 4 * 50  # a few columns with large inputs
    grid = QuantGrid(4, 32, True)

    def weighted(params):
        return ((grid.fake(w, *(p[..., None] for p in params)) - w).abs().pow(2.4) * weights).sum(-1)

    plain, searched = weighted(grid.params_mse(w)), weighted(grid.params_mse(w, weights=weights))
    assert bool((searched <= plain * (1 + 1e-6)).all()) and float(searched.sum()) < 0.9 * float(plain.sum())
