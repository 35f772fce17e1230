"""GGUF loading: tiny GGUF files written with gguf.GGUFWriter from tiny random HF models."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers as tf

from neutrino.errors import CheckpointError, ConfigError
from neutrino.weights import iter_gguf_weights, load_gguf_config, read_gguf_tensors_raw
from neutrino.weights.gguf_names import permute_rows, unpermute_rows

Q = gguf.GGMLQuantizationType
SMALL = dict(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=256
)
LLAMA_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GPT2_NAMES = {
    "transformer.wte.weight": "token_embd.weight",
    "transformer.wpe.weight": "position_embd.weight",
    "transformer.ln_f.weight": "output_norm.weight",
    "transformer.ln_f.bias": "output_norm.bias",
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, written out independently of Neutrino."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf: str, arch: str) -> str:
    """HF name -> llama.cpp name (the converter's mapping, restricted to what the tiny models use)."""
    if arch == "gpt2":
        if hf in GPT2_NAMES:
            return GPT2_NAMES[hf]
        m = re.match(r"transformer\.h\.(\d+)\.(.+)\.(weight|bias)$", hf)
        return f"blk.{m[1]}.{GPT2_NAMES[m[2]]}.{m[3]}"
    if hf in LLAMA_NAMES:
        return LLAMA_NAMES[hf]
    i, rest = re.match(r"model\.layers\.(\d+)\.(.+)$", hf).groups()
    return f"blk.{i}.{LLAMA_NAMES[rest]}"


def to_gguf_layout(hf: str, w: np.ndarray, arch: str, cfg: tf.PretrainedConfig) -> np.ndarray:
    """What llama.cpp's converter stores for HF tensor `hf` (numpy order)."""
    if arch == "llama" and ".self_attn.q_proj." in hf:
        return llama_cpp_permute(w, cfg.num_attention_heads)
    if arch == "llama" and ".self_attn.k_proj." in hf:
        return llama_cpp_permute(w, cfg.num_key_value_heads)
    if arch == "gpt2" and hf.endswith(CONV1D):
        return w.T.copy()
    return w


def default_qtype(hf: str, w: np.ndarray) -> Q:
    return Q.F32


def write_gguf(
    path: Path,
    model: tf.PreTrainedModel,
    arch: str,
    qtype: Callable[[str, np.ndarray], Q] = default_qtype,
    meta: dict | None = None,
) -> dict[str, np.ndarray]:
    """Write `model` as a GGUF file; returns the HF state dict as numpy arrays."""
    cfg, meta = model.config, meta or {}
    w = gguf.GGUFWriter(str(path), meta.get("arch", arch))
    a = meta.get("arch", arch)
    if arch == "gpt2":
        hidden, heads, layers, ff, ctx = cfg.n_embd, cfg.n_head, cfg.n_layer, 4 * cfg.n_embd, cfg.n_positions
        w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    else:
        hidden, heads, layers = cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers
        ff, ctx = cfg.intermediate_size, cfg.max_position_embeddings
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
        if arch == "qwen3":
            w.add_key_length(cfg.head_dim)
            w.add_value_length(cfg.head_dim)
    w.add_uint32(f"{a}.context_length", ctx)
    w.add_uint32(f"{a}.embedding_length", hidden)
    w.add_uint32(f"{a}.block_count", layers)
    w.add_uint32(f"{a}.feed_forward_length", meta.get("feed_forward_length", ff))
    w.add_uint32(f"{a}.attention.head_count", heads)
    w.add_uint32(f"{a}.vocab_size", cfg.vocab_size)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings and arch != "gpt2":
        sd.pop("lm_head.weight")
    for hf, value in sd.items():
        name = "output.weight" if arch == "gpt2" and hf == "lm_head.weight" else gguf_name(hf, arch)
        data = to_gguf_layout(hf, value, arch, cfg)
        q = qtype(hf, data)
        if q == Q.F32:
            w.add_tensor(name, data.astype(np.float32))
        elif q == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, q), raw_dtype=q)
    for name, data in meta.get("extra_tensors", {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def tiny(arch: str) -> tf.PreTrainedModel:
    torch.manual_seed(0)
    heads = dict(num_attention_heads=4, num_key_value_heads=2)
    cfg = {
        "llama": lambda: tf.LlamaConfig(**SMALL, **heads, rope_theta=10000.0),
        "qwen2": lambda: tf.Qwen2Config(**SMALL, **heads, tie_word_embeddings=True),
        "qwen3": lambda: tf.Qwen3Config(**SMALL, **heads, head_dim=32),
        "gpt2": lambda: tf.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=256),
    }[arch]()
    model = tf.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def mixed_qtype(hf: str, w: np.ndarray) -> Q:
    """F32 norms/biases; Q4_1, Q8_0, Q4_0, F16 and BF16 for the matrices (row length 64/128 is block-aligned)."""
    if w.ndim == 1:
        return Q.F32
    for key, q in (
        ("q_proj", Q.Q4_1),
        ("k_proj", Q.Q8_0),
        ("v_proj", Q.Q4_0),
        ("embed", Q.Q8_0),
        ("up", Q.F16),
        ("o_proj", Q.BF16),
    ):
        if key in hf:
            return q
    return Q.Q4_1


def _expected_dequant(hf: str, w: np.ndarray, arch: str, cfg, qtype) -> np.ndarray:
    """Dequantized reference in HF layout. Quantization is row-wise, so the llama row permutation
    commutes with it; GPT-2 Conv1D weights are quantized in the stored (transposed) layout."""
    q = qtype(hf, w)
    stored = w.T if arch == "gpt2" and hf.endswith(CONV1D) else w
    if q in (Q.F32, Q.F16):
        deq = stored.astype(np.float16 if q == Q.F16 else np.float32).astype(np.float32)
    else:
        deq = gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(stored), q), q)
    return deq.T if stored is not w else deq


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2"])
def test_f32_roundtrip_equals_hf_state_dict(tmp_path: Path, arch: str) -> None:
    model = tiny(arch)
    sd = write_gguf(tmp_path / "m.gguf", model, arch)
    got = dict(iter_gguf_weights(tmp_path / "m.gguf"))
    assert set(got) == set(sd)
    for name, tensor in got.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, torch.from_numpy(sd[name])), name


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
def test_quantized_values_match_gguf_dequantize(tmp_path: Path, arch: str) -> None:
    model = tiny(arch)
    qtype = mixed_qtype if arch != "gpt2" else (lambda hf, w: Q.Q8_0 if w.ndim == 2 else Q.F32)
    sd = write_gguf(tmp_path / "m.gguf", model, arch, qtype)
    got = dict(iter_gguf_weights(tmp_path / "m.gguf"))
    assert set(got) == set(sd)
    for name, tensor in got.items():
        want = _expected_dequant(name, sd[name], arch, model.config, qtype)
        assert tuple(tensor.shape) == sd[name].shape, name
        np.testing.assert_array_equal(tensor.numpy(), want, err_msg=name)


def test_config_from_metadata(tmp_path: Path) -> None:
    write_gguf(tmp_path / "l.gguf", tiny("llama"), "llama")
    cfg = load_gguf_config(tmp_path / "l.gguf")
    assert cfg.architecture == "LlamaForCausalLM"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (
        128,
        64,
        128,
        2,
    )
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 16)
    assert (cfg.max_position_embeddings, cfg.rope_theta, cfg.rms_norm_eps) == (256, 10000.0, 1e-6)
    assert not cfg.tie_word_embeddings and not cfg.qk_norm and not cfg.attention_bias
    assert (cfg.bos_token_id, cfg.eos_token_id) == (1, 2)
    write_gguf(tmp_path / "q3.gguf", tiny("qwen3"), "qwen3")
    cfg3 = load_gguf_config(tmp_path / "q3.gguf")
    assert (cfg3.architecture, cfg3.head_dim, cfg3.qk_norm, cfg3.tie_word_embeddings) == (
        "Qwen3ForCausalLM",
        32,
        True,
        False,
    )
    write_gguf(tmp_path / "q2.gguf", tiny("qwen2"), "qwen2")
    cfg2 = load_gguf_config(tmp_path / "q2.gguf")
    assert (cfg2.attention_bias, cfg2.tie_word_embeddings) == (True, True)
    write_gguf(tmp_path / "g.gguf", tiny("gpt2"), "gpt2")
    cfgg = load_gguf_config(tmp_path / "g.gguf")
    assert (cfgg.architecture, cfgg.intermediate_size, cfgg.tie_word_embeddings) == (
        "GPT2LMHeadModel",
        256,
        True,
    )


def test_llama_unpermute_matches_transformers_gguf_loader(tmp_path: Path) -> None:
    """transformers' own GGUF loader (reverse permutation included) must agree on a Q4_1/Q8_0 file."""
    model = tiny("llama")
    write_gguf(tmp_path / "m.gguf", model, "llama", mixed_qtype)
    ref = tf.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf").state_dict()
    got = dict(iter_gguf_weights(tmp_path / "m.gguf"))
    assert set(got) == set(ref)
    for name, tensor in got.items():
        assert torch.equal(tensor, ref[name].float()), name


def test_permutation_helpers_are_inverse() -> None:
    w = np.arange(8 * 3 * 5, dtype=np.float32).reshape(8 * 3, 5)
    np.testing.assert_array_equal(permute_rows(w, 3), llama_cpp_permute(w, 3))
    np.testing.assert_array_equal(unpermute_rows(permute_rows(w, 3), 3), w)
    b = np.arange(24, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(b, 2), 2), b)


def test_raw_tensors_keep_quantized_blocks_in_hf_row_order(tmp_path: Path) -> None:
    model = tiny("llama")
    sd = write_gguf(tmp_path / "m.gguf", model, "llama", mixed_qtype)
    raw = {t.hf_name: t for t in read_gguf_tensors_raw(tmp_path / "m.gguf")}
    q = raw["model.layers.0.self_attn.q_proj.weight"]
    assert (q.ggml_type, q.shape, q.name) == ("Q4_1", (64, 64), "blk.0.attn_q.weight")
    assert q.data.dtype == np.uint8 and q.data.shape == (64, 2 * 20)  # 2 blocks of 20 bytes per row
    for name in ("model.layers.1.self_attn.k_proj.weight", "model.layers.0.self_attn.q_proj.weight"):
        t = raw[name]
        deq = gguf.quants.dequantize(t.data, Q[t.ggml_type])
        np.testing.assert_array_equal(
            deq, _expected_dequant(name, sd[name], "llama", model.config, mixed_qtype)
        )
    assert raw["model.norm.weight"].ggml_type == "F32"


def _write_and_expect(tmp_path: Path, pattern: str, exc=CheckpointError, **meta) -> None:
    path = tmp_path / "bad.gguf"
    write_gguf(path, tiny("llama"), "llama", meta=meta)
    with pytest.raises(exc, match=pattern):
        list(iter_gguf_weights(path))


def test_shape_mismatch_names_file_tensor_and_expected_shape(tmp_path: Path) -> None:
    _write_and_expect(
        tmp_path,
        r"bad\.gguf: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' \(stored as 'blk\.0\.ffn_gate\.weight'\)"
        r" has shape \[128, 64\], expected \[96, 64\]",
        feed_forward_length=96,
    )


def test_unsupported_architecture(tmp_path: Path) -> None:
    _write_and_expect(
        tmp_path,
        r"bad\.gguf: unsupported GGUF architecture 'falcon'; supported: llama",
        ConfigError,
        arch="falcon",
    )


def test_unsupported_tensor_type(tmp_path: Path) -> None:
    extra = {"blk.0.attn_q.bias": np.zeros(64, dtype=np.int32)}
    _write_and_expect(
        tmp_path,
        r"bad\.gguf: tensor 'blk\.0\.attn_q\.bias' has unsupported GGML type I32",
        extra_tensors=extra,
    )


def test_unknown_tensor_name(tmp_path: Path) -> None:
    extra = {"blk.0.mystery.weight": np.zeros(64, dtype=np.float32)}
    _write_and_expect(
        tmp_path, r"bad\.gguf: unexpected tensor 'blk\.0\.mystery\.weight'", extra_tensors=extra
    )


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not GGUF" * 4)
    with pytest.raises(CheckpointError, match=r"fake\.gguf: not a valid GGUF file"):
        load_gguf_config(path)
    with pytest.raises(CheckpointError, match=r"missing\.gguf: GGUF file not found"):
        iter_gguf_weights(tmp_path / "missing.gguf")
