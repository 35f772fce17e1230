"""Expected shapes of HF-named checkpoint tensors, derived from a `ModelConfig`.

Used by the GGUF loader to reject tensors that do not fit the metadata, and usable by model code to
validate HF safetensors checkpoints the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError

_LAYER_RE = re.compile(r"^(model\.layers|transformer\.h)\.(\d+)\.(.+)$")


def _llama_layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    h, q, kv, ff = (
        cfg.hidden_size,
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
        cfg.intermediate_size,
    )
    return {
        "self_attn.q_proj.weight": (q, h),
        "self_attn.k_proj.weight": (kv, h),
        "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q),
        "self_attn.q_proj.bias": (q,),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.bias": (h,),
        "self_attn.q_norm.weight": (cfg.head_dim,),
        "self_attn.k_norm.weight": (cfg.head_dim,),
        "mlp.gate_proj.weight": (ff, h),
        "mlp.up_proj.weight": (ff, h),
        "mlp.down_proj.weight": (h, ff),
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
    }


def _gpt2_layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    h, ff = cfg.hidden_size, cfg.intermediate_size
    return {  # HF GPT-2 uses Conv1D: weights are stored [in, out]
        "ln_1.weight": (h,),
        "ln_1.bias": (h,),
        "attn.c_attn.weight": (h, 3 * h),
        "attn.c_attn.bias": (3 * h,),
        "attn.c_proj.weight": (h, h),
        "attn.c_proj.bias": (h,),
        "ln_2.weight": (h,),
        "ln_2.bias": (h,),
        "mlp.c_fc.weight": (h, ff),
        "mlp.c_fc.bias": (ff,),
        "mlp.c_proj.weight": (ff, h),
        "mlp.c_proj.bias": (h,),
    }


def _global_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    v, h = cfg.vocab_size, cfg.hidden_size
    if cfg.architecture == "GPT2LMHeadModel":
        return {
            "transformer.wte.weight": (v, h),
            "transformer.wpe.weight": (cfg.max_position_embeddings, h),
            "transformer.ln_f.weight": (h,),
            "transformer.ln_f.bias": (h,),
            "lm_head.weight": (v, h),
        }
    return {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}


def expected_shape(name: str, cfg: ModelConfig) -> tuple[int, ...] | None:
    """The shape `name` must have in an HF state dict for `cfg`, or None for an unknown name."""
    if (m := _LAYER_RE.match(name)) is None:
        return _global_shapes(cfg).get(name)
    if int(m.group(2)) >= cfg.num_hidden_layers:
        return None
    table = _gpt2_layer_shapes(cfg) if cfg.architecture == "GPT2LMHeadModel" else _llama_layer_shapes(cfg)
    return table.get(m.group(3))


def check_shape(path: Path, name: str, tensor: torch.Tensor, cfg: ModelConfig, source: str = "") -> None:
    """Raise CheckpointError unless `tensor` (HF name `name`) has the shape `cfg` implies."""
    want = expected_shape(name, cfg)
    where = f" (stored as {source!r})" if source and source != name else ""
    if want is None:
        raise CheckpointError(f"{path}: unexpected tensor {name!r}{where} for {cfg.architecture}")
    if tuple(tensor.shape) != want:
        raise CheckpointError(
            f"{path}: tensor {name!r}{where} has shape {list(tensor.shape)}, expected {list(want)} "
            f"from the model config"
        )
