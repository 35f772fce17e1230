"""`compress()` end to end on tiny models: the checkpoint format, atomic output, the source left
untouched, errors for unsupported models and recipes that do not fit, and the evaluation report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neutrino.compression.api import compress
from neutrino.compression.export import dequantize_checkpoint
from neutrino.compression.recipe import Recipe
from neutrino.errors import ConfigError
from neutrino.layers.quant.config import QuantConfig

CALIB = {"samples": 4, "seq_len": 64}


def _hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def source(tiny_checkpoint) -> Path:
    return tiny_checkpoint("llama", tokenizer=True)


def test_quantized_checkpoint_format(source, tmp_path) -> None:
    before = _hashes(source)
    out = tmp_path / "q"
    recipe = {"quantize": {"method": "gptq", "bits": 4, "group_size": 32, "symmetric": False}, "calibration": CALIB,
              "skip": ["lm_head", "layers.1.mlp.down_proj"]}
    result = compress(source, recipe, out, evaluate=False, progress=False)
    assert _hashes(source) == before  # the source is never modified
    config = json.loads((out / "config.json").read_text())
    qc = QuantConfig.from_dict(config["quantization_config"])
    assert (qc.bits, qc.group_size, qc.symmetric, qc.method) == (4, 32, False, "gptq") and qc == result.quant_config
    assert qc.is_ignored("lm_head") and qc.is_ignored("model.layers.1.mlp.down_proj")
    tensors = load_file(out / "model.safetensors")
    assert tensors["model.layers.0.self_attn.q_proj.qweight"].shape == (64, 32)
    assert tensors["model.layers.0.self_attn.q_proj.scales"].shape == (64, 2)
    assert "model.layers.0.self_attn.q_proj.zeros" in tensors and "model.layers.0.self_attn.q_proj.weight" not in tensors
    assert "model.layers.1.mlp.down_proj.weight" in tensors
    # a skip list without model.embed_tokens quantizes the table (RTN, even in a GPTQ recipe)
    assert "model.embed_tokens.qweight" in tensors and qc.ignore == ("lm_head", "layers.1.mlp.down_proj")
    assert Recipe.from_yaml(out / "recipe.yaml").to_dict() == result.recipe.to_dict()
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # no temporary directory left behind
    dense = tmp_path / "dense"
    dense.mkdir()
    dequantize_checkpoint(out, dense)
    w = load_file(dense / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    src = load_file(source / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert w.dtype == torch.float32 and 0 < float((w - src).abs().max()) < 0.5 * float(src.abs().max())


def test_existing_output_is_refused_unless_overwrite(source, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    recipe = {"quantize": {"method": "rtn", "bits": 8}}
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        compress(source, recipe, out, evaluate=False, progress=False)
    assert (out / "keep.txt").exists()
    compress(source, recipe, out, overwrite=True, evaluate=False, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ConfigError, match="overlaps the source"):
        compress(source, recipe, source / "inside", evaluate=False, progress=False)


def test_pruned_only_is_a_dense_checkpoint(source, tmp_path) -> None:
    out = tmp_path / "p"
    result = compress(source, {"prune": {"method": "sparsegpt", "pattern": "2:4"}, "calibration": CALIB}, out,
                      evaluate=False, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["neutrino_sparsity"]["pattern"] == "2:4" and result.sparsity == pytest.approx(0.5, abs=1e-3)
    w = load_file(out / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert bool(((w != 0).view(w.shape[0], -1, 4).sum(-1) <= 2).all())


@pytest.mark.parametrize(("recipe", "match"), [
    ({"quantize": {"method": "rtn", "group_size": 48}}, "layer model.layers.0.self_attn.q_proj: group_size 48 "
                                                        "does not divide in_features 64"),
    ({"prune": {"method": "magnitude", "pattern": "2:3"}}, "M=3 does not divide in_features 64"),
    ({"quantize": {"method": "rtn"}, "skip": ["lm_head", "mlp.gate"]}, "skip entry 'mlp.gate' matches no layer"),
    ({"quantize": {"method": "gptq", "group_size": 32}, "calibration": {"samples": 2, "seq_len": 5000}}, "exceeds the model's"),
])
def test_recipes_that_do_not_fit(source, tmp_path, recipe: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compress(source, recipe, tmp_path / "o", evaluate=False, progress=False)
    assert not (tmp_path / "o").exists()


def test_unsupported_architecture(tiny_checkpoint, tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not support architecture.*GPT2LMHeadModel"):
        compress(tiny_checkpoint("gpt2"), {"quantize": {"method": "rtn"}}, tmp_path / "o", evaluate=False)


def test_evaluation_report(source, tmp_path) -> None:
    from neutrino.compression.evaluate.api import EvalLimits

    out = tmp_path / "awq"
    recipe = {"quantize": {"method": "awq", "bits": 4, "group_size": 32, "grid": 4}, "calibration": CALIB}
    result = compress(source, recipe, out, eval_limits=EvalLimits(window=64, stride=32, max_tokens=128),
                      progress=False)
    a = result.assessment
    assert a.result.model == str(out) and a.result.ppl("lee") > 1 and a.reference.ppl("lee") > 1
    assert a.result.ppl("wiki") > 1 and a.reference.ppl("wiki") > 1  # by default also a corpus never calibrated on
    assert a.result.held_out == {"wiki": "held-out corpus", "lee": "held-out segments"}
    assert a.reference.held_out == {"wiki": "no calibration", "lee": "no calibration"}
    report = (out / "report.md").read_text()
    assert f"evaluated with: **{a.mode}**" in report and (out / "results.json").exists()
    assert "perplexity on the Wikipedia excerpt:" in report and "[held-out corpus]" in report
    assert "`awq`: lee: held-out segments; wiki: held-out corpus" in report


def test_quantized_lm_head_unties_the_embeddings(tiny_checkpoint, tmp_path) -> None:
    source = tiny_checkpoint("qwen2", tie=True)
    out = tmp_path / "q"
    compress(source, {"quantize": {"method": "rtn", "bits": 8}, "skip": ["model.embed_tokens"]}, out,
             evaluate=False, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["quantization_config"]["ignore"] == ["model.embed_tokens"]
    tensors = load_file(out / "model.safetensors")
    assert tensors["lm_head.qweight"].dtype == torch.int8 and "model.embed_tokens.weight" in tensors
    dense = tmp_path / "dense"
    dense.mkdir()
    dequantize_checkpoint(out, dense)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(dense)
    ref = AutoModelForCausalLM.from_pretrained(source)
    ids = torch.arange(1, 17)[None]
    with torch.no_grad():
        got, want = model(ids).logits, ref(ids).logits
    assert float((got - want).norm() / want.norm()) < 0.05  # int8 everywhere, lm_head included (3% here)


def test_default_group_size_fits_the_model(source, tmp_path) -> None:
    """No group size given at 4 bits: 128 unless it does not divide every quantized layer; the tiny
    model's widths 64 and 96 take 32 (64 does not divide 96). An explicit 128 is an error."""
    out = tmp_path / "q"
    result = compress(source, {"quantize": {"method": "rtn", "bits": 4}}, out, evaluate=False, progress=False)
    assert result.recipe.quantize.group_size == 32
    assert json.loads((out / "config.json").read_text())["quantization_config"]["group_size"] == 32
    assert "group_size: 32" in (out / "recipe.yaml").read_text()
    with pytest.raises(ConfigError, match="group_size 128 does not divide in_features 64"):
        compress(source, {"quantize": {"method": "rtn", "bits": 4, "group_size": 128}}, tmp_path / "r",
                 evaluate=False, progress=False)


def test_fp_target_runs_end_to_end(source, tmp_path) -> None:
    """GPTQ's fp_target through compress(): layer 0's first group sees the same inputs in both streams, so
    its target is its own weight (the same codes as plain GPTQ); deeper layers see the compressed stream's
    drift and get other codes; the option is recorded in the checkpoint."""
    q = {"method": "gptq", "bits": 4, "group_size": 32}
    plain, fp = tmp_path / "plain", tmp_path / "fp"
    compress(source, {"quantize": q, "calibration": CALIB}, plain, evaluate=False, progress=False)
    result = compress(source, {"quantize": {**q, "fp_target": True}, "calibration": CALIB}, fp, evaluate=False,
                      progress=False)
    assert result.quant_config.extra.get("fp_target") is True
    assert Recipe.from_yaml(fp / "recipe.yaml").quantize.fp_target is True
    a, b = load_file(plain / "model.safetensors"), load_file(fp / "model.safetensors")
    for name in ("q_proj", "k_proj", "v_proj"):
        key = f"model.layers.0.self_attn.{name}.qweight"
        assert torch.equal(a[key], b[key]), key
    deeper = [k for k in a if k.startswith("model.layers.1.") and k.endswith(".qweight")]
    assert deeper and any(not torch.equal(a[k], b[k]) for k in deeper)
