"""HF checkpoint loading: config.json parsing and safetensors iteration against tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as tf

from neutrino.errors import CheckpointError, ConfigError
from neutrino.weights import expected_shape, iter_hf_weights, load_hf_config

SMALL = dict(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=256
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 128,
}


def _configs() -> dict[str, tf.PretrainedConfig]:
    heads = dict(num_attention_heads=4, num_key_value_heads=2)
    return {
        "llama": tf.LlamaConfig(**SMALL, **heads, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE)),
        "mistral": tf.MistralConfig(**SMALL, **heads, sliding_window=64),
        "qwen2": tf.Qwen2Config(**SMALL, **heads, tie_word_embeddings=True),
        "qwen3": tf.Qwen3Config(**SMALL, **heads, head_dim=32, rope_theta=1e6),
        "gpt2": tf.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=256),
    }


def _save(cfg: tf.PretrainedConfig, out: Path, dtype: torch.dtype = torch.float32, **kw) -> dict:
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg).to(dtype)
    with torch.no_grad():  # give biases and norms non-trivial values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(out, **kw)
    sd = {k: v for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


@pytest.fixture(scope="module", params=list(_configs()))
def saved(request, tmp_path_factory) -> tuple[str, Path, dict]:
    name = request.param
    out = tmp_path_factory.mktemp(name)
    return name, out, _save(_configs()[name], out)


def test_config_parsing(saved) -> None:
    name, out, _ = saved
    cfg = load_hf_config(out)
    want_arch = {
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
        "qwen3": "Qwen3ForCausalLM",
        "gpt2": "GPT2LMHeadModel",
    }[name]
    assert cfg.architecture == want_arch
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (128, 64, 2)
    assert cfg.num_attention_heads == 4
    assert cfg.max_position_embeddings == 256
    assert cfg.hf_config["model_type"] == name
    expected = {
        "llama": dict(num_key_value_heads=2, head_dim=16, rope_theta=500000.0, tie_word_embeddings=False),
        "mistral": dict(sliding_window=64, attention_bias=False, head_dim=16),
        "qwen2": dict(attention_bias=True, tie_word_embeddings=True, sliding_window=None, qk_norm=False),
        "qwen3": dict(head_dim=32, qk_norm=True, attention_bias=False, rope_theta=1e6),
        "gpt2": dict(
            intermediate_size=256,
            num_key_value_heads=4,
            head_dim=16,
            rms_norm_eps=1e-5,
            hidden_act="gelu_new",
            tie_word_embeddings=True,
        ),
    }[name]
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    if name == "llama":
        assert cfg.rope_scaling == LLAMA3_ROPE
    else:
        assert cfg.rope_scaling is None


def test_weights_equal_state_dict(saved) -> None:
    _, out, sd = saved
    cfg = load_hf_config(out)
    got = dict(iter_hf_weights(out))
    assert set(got) == set(sd)
    for name, tensor in got.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, sd[name]), name
        assert expected_shape(name, cfg) == tuple(tensor.shape), name


def test_sharded_checkpoint(tmp_path: Path) -> None:
    sd = _save(_configs()["llama"], tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    got = dict(iter_hf_weights(tmp_path))
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_bf16_checkpoint_keeps_dtype(tmp_path: Path) -> None:
    sd = _save(_configs()["qwen3"], tmp_path, dtype=torch.bfloat16)
    got = dict(iter_hf_weights(tmp_path))
    assert {t.dtype for t in got.values()} == {torch.bfloat16}
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert load_hf_config(tmp_path).torch_dtype == "bfloat16"


def _write_config(d: Path, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(text)
    return d


def test_legacy_rope_keys_and_generation_config_eos(tmp_path: Path) -> None:
    d = dict(architectures=["LlamaForCausalLM"], num_attention_heads=4, eos_token_id=2, rope_theta=1234.0)
    d |= SMALL | {"rope_scaling": {"type": "linear", "factor": 2.0}}
    _write_config(tmp_path, json.dumps(d))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    cfg = load_hf_config(tmp_path)
    assert cfg.rope_theta == 1234.0
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert cfg.eos_token_ids == [2, 7]
    assert cfg.num_key_value_heads == 4  # defaults to num_attention_heads


def test_corrupted_config_json(tmp_path: Path) -> None:
    _write_config(tmp_path, '{"architectures": ["LlamaForCausalLM"],')
    with pytest.raises(CheckpointError, match=r"config\.json: invalid JSON at line 1"):
        load_hf_config(tmp_path)


def test_missing_config_json(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/config\.json: file not found"):
        load_hf_config(tmp_path)


def test_unknown_architecture_lists_supported(tmp_path: Path) -> None:
    _write_config(tmp_path, json.dumps({"architectures": ["FalconForCausalLM"], **SMALL}))
    with pytest.raises(ConfigError) as e:
        load_hf_config(tmp_path)
    msg = str(e.value)
    assert "config.json" in msg and "FalconForCausalLM" in msg
    assert "LlamaForCausalLM" in msg and "GPT2LMHeadModel" in msg


def test_missing_and_bad_keys_name_the_key(tmp_path: Path) -> None:
    d = {"architectures": ["LlamaForCausalLM"], **SMALL}
    _write_config(tmp_path, json.dumps(d))
    with pytest.raises(CheckpointError, match=r"config\.json: missing required key 'num_attention_heads'"):
        load_hf_config(tmp_path)
    _write_config(tmp_path, json.dumps(d | {"num_attention_heads": "four"}))
    with pytest.raises(CheckpointError, match=r"'num_attention_heads' must be an integer, got 'four'"):
        load_hf_config(tmp_path)
    _write_config(tmp_path, json.dumps(d | {"num_attention_heads": 4, "num_key_value_heads": 3}))
    with pytest.raises(ConfigError, match=r"config\.json: .*not a multiple"):
        load_hf_config(tmp_path)


def test_missing_weights_names_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: no \*\.safetensors weights found"):
        iter_hf_weights(tmp_path)


def test_index_with_missing_shard(tmp_path: Path) -> None:
    index = {"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"shard 'model-00001-of-00002.safetensors'.*does not exist"):
        iter_hf_weights(tmp_path)


def test_corrupt_safetensors_names_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read safetensors file"):
        list(iter_hf_weights(tmp_path))
