"""Tiny GGUF files with quantized tensors, written with gguf.GGUFWriter (as llama.cpp's converter lays
them out: llama Q/K rows permuted, GPT-2 Conv1D weights stored [out, in])."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers as tf

Q = gguf.GGMLQuantizationType
LLAMA = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
         "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
GPT2 = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
        "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias",
        "ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
        "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def tiny_model(arch: str, tie: bool) -> tf.PreTrainedModel:
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2)
    else:
        cfg = tf.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=tie, initializer_range=0.2)
    return tf.AutoModelForCausalLM.from_config(cfg)


def _name(hf: str, arch: str) -> str:
    table = GPT2 if arch == "gpt2" else LLAMA
    if hf in table:
        return table[hf]
    parts = hf.split(".")
    layer, rest, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    return f"blk.{layer}.{table[rest]}.{kind}"


def _stored(hf: str, w: np.ndarray, arch: str, cfg) -> np.ndarray:
    def permute(x: np.ndarray, n: int) -> np.ndarray:
        return x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    if arch == "llama" and ".q_proj." in hf:
        return permute(w, cfg.num_attention_heads)
    if arch == "llama" and ".k_proj." in hf:
        return permute(w, cfg.num_key_value_heads)
    if arch == "gpt2" and w.ndim == 2 and ".h." in hf:
        return w.T.copy()  # Conv1D [in, out] -> [out, in]
    return w


def write_gguf(path: Path, model: tf.PreTrainedModel, arch: str, qtype: Callable[[str], Q]) -> Path:
    """`qtype(hf_name)` picks each 2-D tensor's type; 1-D tensors are F32."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    if arch == "gpt2":
        w.add_layer_norm_eps(cfg.layer_norm_epsilon)
        dims = (cfg.n_embd, cfg.n_head, cfg.n_layer, 4 * cfg.n_embd, cfg.n_positions)
    else:
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_rope_freq_base(10000.0)
        dims = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers, cfg.intermediate_size,
                cfg.max_position_embeddings)
    for key, value in zip(("embedding_length", "attention.head_count", "block_count", "feed_forward_length",
                           "context_length"), dims, strict=True):
        w.add_uint32(f"{arch}.{key}", value)
    w.add_uint32(f"{arch}.vocab_size", cfg.vocab_size)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    if getattr(cfg, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    for hf, value in sd.items():
        if hf.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        data = _stored(hf, value, arch, cfg)
        q = qtype(hf) if data.ndim == 2 else Q.F32
        if q == Q.F32:
            w.add_tensor(_name(hf, arch), data.astype(np.float32))
        else:
            w.add_tensor(_name(hf, arch), gguf.quants.quantize(np.ascontiguousarray(data), q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
