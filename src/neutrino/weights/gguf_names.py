"""GGUF (llama.cpp) tensor names -> Hugging Face names, and the layout fixes between the two.

llama.cpp's converter changes two things besides names:

* for the `llama` architecture it permutes the rows of `attn_q`/`attn_k` (weights and biases) from
  HF's "rotate half" rotary layout to GPT-J's interleaved layout; `unpermute_rows` undoes it;
* for `gpt2` it transposes the HF Conv1D weights ([in, out]) into [out, in]; they are transposed back.
"""

from __future__ import annotations

import re

import numpy as np

_LLAMA_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LLAMA_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GPT2_LAYER = {
    "attn_norm.weight": "ln_1.weight",
    "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight",
    "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight",
    "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight",
    "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight",
    "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight",
    "ffn_down.bias": "mlp.c_proj.bias",
}
_GPT2_GLOBAL = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
    "output.weight": "lm_head.weight",
}
_GPT2_TRANSPOSED = {"attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight"}
# Tensors llama.cpp adds that have no HF state-dict counterpart (rope_freqs: precomputed llama3 factors).
IGNORED_GGUF_TENSORS = frozenset({"rope_freqs.weight"})

_BLK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def hf_name(gguf_name: str, arch: str) -> str | None:
    """HF state-dict name for GGUF tensor `gguf_name` of GGUF architecture `arch`, None if unknown."""
    gpt2 = arch == "gpt2"
    if (m := _BLK_RE.match(gguf_name)) is None:
        return (_GPT2_GLOBAL if gpt2 else _LLAMA_GLOBAL).get(gguf_name)
    suffix = (_GPT2_LAYER if gpt2 else _LLAMA_LAYER).get(m.group(2))
    if suffix is None:
        return None
    return f"{'transformer.h' if gpt2 else 'model.layers'}.{m.group(1)}.{suffix}"


def needs_transpose(gguf_name: str, arch: str) -> bool:
    """Whether the GGUF tensor is the transpose of the HF one (GPT-2 Conv1D weights)."""
    m = _BLK_RE.match(gguf_name)
    return arch == "gpt2" and m is not None and m.group(2) in _GPT2_TRANSPOSED


def rope_permuted_heads(gguf_name: str, arch: str, n_head: int, n_head_kv: int) -> int | None:
    """Number of heads whose rows llama.cpp permuted in this tensor, or None if it is not permuted."""
    if arch != "llama" or (m := _BLK_RE.match(gguf_name)) is None:
        return None
    part = m.group(2)
    if part.startswith("attn_q."):
        return n_head
    if part.startswith("attn_k."):
        return n_head_kv
    return None


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation on the first axis of `rows` (any trailing shape).

    llama.cpp maps each head's rows [r0 .. r(d/2-1), i0 .. i(d/2-1)] (HF rotate-half) to the
    interleaved order [r0, i0, r1, i1, ...]; this restores the HF order. Works on dequantized
    weights, biases, and raw quantized rows alike since it only reorders whole rows."""
    n_rows = rows.shape[0]
    if n_rows % (2 * n_head):
        raise ValueError(f"{n_rows} rows cannot be split into {n_head} heads of even size")
    half = n_rows // n_head // 2
    grouped = rows.reshape(n_head, half, 2, *rows.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2).reshape(rows.shape))


def permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's forward permutation (HF -> GGUF); the inverse of `unpermute_rows`."""
    half = rows.shape[0] // n_head // 2
    grouped = rows.reshape(n_head, 2, half, *rows.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2).reshape(rows.shape))
