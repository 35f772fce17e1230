"""GPT-2: learned positions, LayerNorm, fused c_attn with bias, GELU MLP (HF Conv1D weights transposed at load)."""

from __future__ import annotations

import torch
from torch import nn

from neutrino.config import ModelConfig
from neutrino.layers.activation import get_activation
from neutrino.layers.attention.backend import AttentionBackend
from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.layers.linear import Linear, QuantFactory
from neutrino.models.base import CausalLM
from neutrino.models.registry import MODELS

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class GPT2Block(nn.Module):
    """Pre-LayerNorm block with multi-head attention (no GQA) and a GELU MLP."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, backend: AttentionBackend, prefix: str,
                 quant: QuantFactory | None = None) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.ln_1 = nn.LayerNorm(h, eps=cfg.rms_norm_eps, dtype=dtype)
        self.c_attn = Linear(h, 3 * h, True, dtype, prefix=f"{prefix}.attn.c_attn", quant=quant)
        self.attn_proj = Linear(h, h, True, dtype, prefix=f"{prefix}.attn.c_proj", quant=quant)
        self.ln_2 = nn.LayerNorm(h, eps=cfg.rms_norm_eps, dtype=dtype)
        self.c_fc = Linear(h, cfg.intermediate_size, True, dtype, prefix=f"{prefix}.mlp.c_fc", quant=quant)
        self.mlp_proj = Linear(cfg.intermediate_size, h, True, dtype, prefix=f"{prefix}.mlp.c_proj", quant=quant)
        self.act = get_activation(cfg.hidden_act)
        self.backend = backend
        self.scale = self.head_dim**-0.5

    def forward(self, hidden, kv_cache, meta):
        q, k, v = self.c_attn(self.ln_1(hidden)).chunk(3, dim=-1)
        shape = (-1, self.num_heads, self.head_dim)  # [T, H, D]
        out = self.backend.forward(q.reshape(shape), k.reshape(shape), v.reshape(shape), kv_cache, meta, self.scale)
        hidden = hidden + self.attn_proj(out.reshape(out.shape[0], -1))
        return hidden + self.mlp_proj(self.act(self.c_fc(self.ln_2(hidden))))


@MODELS.register("GPT2LMHeadModel")
class GPT2LMHeadModel(CausalLM):
    """GPT-2 with tied input/output embeddings."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, backend: AttentionBackend, max_len: int,
                 quant: QuantFactory | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.wpe = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size, dtype=dtype)
        self.h = nn.ModuleList(GPT2Block(cfg, dtype, backend, f"transformer.h.{i}", quant)
                               for i in range(cfg.num_hidden_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, False, dtype, prefix="lm_head", quant=quant)
        self.requires_grad_(False)

    def forward(self, input_ids, positions, kv_caches, meta: AttentionMetadata):
        hidden = self.wte(input_ids) + self.wpe(positions)  # [T, hidden]
        for block, kv_cache in zip(self.h, kv_caches, strict=True):
            hidden = block(hidden, kv_cache, meta)
        return self.ln_f(hidden)

    def input_embeddings(self) -> nn.Embedding:
        return self.wte

    def map_name(self, name, tensor):
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        if self.is_tied_head_copy(name) or name.endswith((".attn.bias", ".attn.masked_bias")):
            return None  # causal-mask buffers of old checkpoints
        if name.endswith(_CONV1D):
            tensor = tensor.t()  # HF Conv1D stores [in, out]
        name = name.replace("attn.c_proj", "attn_proj").replace("mlp.c_proj", "mlp_proj")
        name = name.replace("attn.c_attn", "c_attn").replace("mlp.c_fc", "c_fc")
        return name, tensor
