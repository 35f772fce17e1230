"""Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama, Mistral, Qwen2 with qkv bias, Qwen3 with QK-norm)."""

from __future__ import annotations

import torch
from torch import nn

from neutrino.config import ModelConfig
from neutrino.layers.activation import silu_and_mul
from neutrino.layers.attention.backend import AttentionBackend
from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.layers.linear import Linear, QuantFactory
from neutrino.layers.norm import RMSNorm
from neutrino.layers.rotary import RotaryEmbedding
from neutrino.models.base import CausalLM
from neutrino.models.decode_plan import DecodePlan
from neutrino.models.registry import MODELS


class LlamaAttention(nn.Module):
    """Fused qkv projection, optional QK-norm, rotary, paged attention, output projection."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, backend: AttentionBackend, prefix: str,
                 quant: QuantFactory | None = None) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, [q_size, kv_size, kv_size], cfg.attention_bias, dtype,
                               prefix=f"{prefix}.qkv_proj", quant=quant)
        self.o_proj = Linear(q_size, cfg.hidden_size, False, dtype, prefix=f"{prefix}.o_proj", quant=quant)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, dtype) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, dtype) if cfg.qk_norm else None
        self.splits = [q_size, kv_size, kv_size]
        self.scale = self.head_dim**-0.5
        self.backend = backend

    def forward(self, cos_sin, hidden, kv_cache, meta, rotary):
        qkv = self.qkv_proj(hidden)
        if self.q_norm is None and rotary.in_place(qkv):  # q and k heads rotated in one pass
            rotary.apply(qkv[:, : self.splits[0] + self.splits[1]].view(qkv.shape[0], -1, self.head_dim), cos_sin)
        q, k, v = qkv.split(self.splits, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = k.view(-1, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.q_norm is not None or not rotary.in_place(qkv):
            q, k = rotary.apply(q, cos_sin), rotary.apply(k, cos_sin)
        out = self.backend.forward(q, k, v, kv_cache, meta, self.scale)  # [T, Hq, D]
        return self.o_proj(out.reshape(out.shape[0], -1))


class LlamaMLP(nn.Module):
    """SwiGLU MLP with a fused gate|up projection."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, prefix: str, quant: QuantFactory | None = None) -> None:
        super().__init__()
        size = cfg.intermediate_size
        self.gate_up_proj = Linear(cfg.hidden_size, [size, size], False, dtype, prefix=f"{prefix}.gate_up_proj",
                                   quant=quant)
        self.down_proj = Linear(size, cfg.hidden_size, False, dtype, prefix=f"{prefix}.down_proj", quant=quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, backend: AttentionBackend, prefix: str,
                 quant: QuantFactory | None = None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg, dtype, backend, f"{prefix}.self_attn", quant)
        self.mlp = LlamaMLP(cfg, dtype, f"{prefix}.mlp", quant)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)

    def forward(self, cos_sin, hidden, residual, kv_cache, meta, rotary):
        """(hidden, residual) -> (hidden, residual): the residual stream is added by the next norm, so
        each add + norm pair runs as one fused op (residual is None before the first layer)."""
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(cos_sin, hidden, kv_cache, meta, rotary)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


@MODELS.register("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
class LlamaForCausalLM(CausalLM):
    """Llama-style causal LM; family differences (bias, QK-norm, rope scaling) come from ModelConfig."""

    stacked_params = (
        ("qkv_proj", "q_proj", 0),
        ("qkv_proj", "k_proj", 1),
        ("qkv_proj", "v_proj", 2),
        ("gate_up_proj", "gate_proj", 0),
        ("gate_up_proj", "up_proj", 1),
    )

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, backend: AttentionBackend, max_len: int,
                 quant: QuantFactory | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, dtype, backend, f"model.layers.{i}", quant) for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.rotary = RotaryEmbedding(cfg.head_dim, max_len, cfg.rope_theta, cfg.rope_scaling, dtype)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, False, dtype, prefix="lm_head", quant=quant)
        self.decode_plan = DecodePlan()  # decode steps' layers in one C++ call where it covers them

    def forward(self, input_ids, positions, kv_caches, meta: AttentionMetadata):
        hidden = self.embed_tokens(input_ids)  # [T, hidden]
        plan = self.decode_plan.for_step(self, hidden, kv_caches, meta)
        if plan is not None:
            hidden, residual = plan.run(hidden, positions, kv_caches, meta.slot_mapping, meta.block_tables,
                                        meta.seq_lens_tensor)
            return self.norm(hidden, residual)[0]
        cos_sin = self.rotary.cos_sin(positions)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(cos_sin, hidden, residual, kv_cache, meta, self.rotary)
        return self.norm(hidden) if residual is None else self.norm(hidden, residual)[0]

    def input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def map_name(self, name, tensor):
        if "rotary_emb" in name:
            return None
        if name.startswith("model."):
            name = name[len("model."):]
        return None if self.is_tied_head_copy(name) else (name, tensor)
