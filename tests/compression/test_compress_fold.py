"""AWQ and SmoothQuant scales folded into the previous op (RMSNorm, v_proj, up_proj) leave the dense
model's function unchanged before any quantization (logits equal within float32 tolerance)."""

from __future__ import annotations

import pytest
import torch

from neutrino.compression.arch import GROUPS, can_fold, fold_scales
from neutrino.compression.layerwise import capture_inputs, load_model, propagate, stats_for_layer
from neutrino.compression.quantize.awq import awq_scales, search_scales
from neutrino.compression.quantize.grid import QuantGrid
from neutrino.compression.quantize.smoothquant import smooth_scales
from neutrino.compression.stats import StatsSpec


def _mha_llama(tmp_path_factory):
    """A tiny Llama with as many KV heads as query heads, so v_proj -> o_proj folds too."""
    import transformers as tf

    torch.manual_seed(3)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                         num_key_value_heads=4, num_hidden_layers=2, initializer_range=0.2)
    path = tmp_path_factory.mktemp("mha-llama")
    tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama-mha", "qwen2", "qwen3"])
def model_dir(request, tiny_checkpoint, tmp_path_factory):
    if request.param == "llama-mha":
        return _mha_llama(tmp_path_factory)
    return tiny_checkpoint(request.param)


@pytest.mark.parametrize("method", ["awq", "smoothquant"])
def test_folding_keeps_the_function(model_dir, method: str) -> None:
    model = load_model(model_dir, progress=False)
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
    hidden, kwargs = capture_inputs(model, ids)
    folded = set()
    for layer in model.model.layers:
        stats = stats_for_layer(layer, hidden, kwargs, StatsSpec(max_rows=256))
        for group in GROUPS:
            if not can_fold(layer, group):
                continue
            st = stats[group.prev]
            weights = [layer.get_submodule(n).weight for n in group.linears]
            if method == "awq":
                searched, alpha = search_scales(st.rows, st.mean_abs, weights, QuantGrid(4, 32), n_grid=5)
                assert bool((searched > 0).all()) and 0 <= alpha < 1
                s = awq_scales(st.mean_abs, 0.5)  # a non-trivial AWQ scale whatever the search chose
            else:
                s = smooth_scales(st.abs_max, weights, 0.5)
            assert not torch.allclose(s, torch.ones_like(s))
            fold_scales(layer, group, s)
            folded.add(group.prev)
        propagate(layer, hidden, kwargs)
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    expected = {g.prev for g in GROUPS} if "mha" in str(model_dir) else {g.prev for g in GROUPS} - {"self_attn.v_proj"}
    assert folded == expected
