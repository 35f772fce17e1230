"""GGUF checkpoints (llama.cpp format): metadata -> `ModelConfig`, tensors -> HF-named float32 tensors.

Supported `general.architecture`: llama (also Mistral, SmolLM2, TinyLlama), qwen2, qwen3, gpt2.
Any tensor type `gguf.quants.dequantize` implements is accepted (F32, F16, BF16, Q4_0, Q4_1, Q5_x, Q8_0,
K-quants, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError, ConfigError
from neutrino.weights.gguf_names import (
    IGNORED_GGUF_TENSORS,
    hf_name,
    needs_transpose,
    rope_permuted_heads,
    unpermute_rows,
)
from neutrino.weights.shapes import check_shape

GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}
_BIG_ARRAYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
)


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One GGUF tensor as stored, for kernels that consume quantized blocks natively.

    `shape` is the logical [rows, cols] (numpy order, i.e. nn.Linear's [out, in]); `data` is the stored
    array (float for F32/F16, uint8 blocks of shape [rows, bytes_per_row] for quantized types). Rows
    of llama `attn_q`/`attn_k` are already un-permuted to the HF order. GPT-2 Conv1D weights are left
    in the stored [out, in] layout (`hf_name`'s HF tensor is their transpose)."""

    name: str
    hf_name: str | None
    ggml_type: str
    shape: tuple[int, ...]
    data: np.ndarray


def open_gguf(path: Path) -> Any:
    """A `gguf.GGUFReader` on `path`; CheckpointError naming the file if it is missing or not GGUF. The
    last two readers are reused while the file is unchanged (parsing the metadata takes seconds, and
    loading a model reads the config and the weights separately)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: GGUF file not found")
    st = path.stat()
    return _open_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def release_readers() -> None:
    """Drop the cached readers (their memory maps and parsed metadata): once a model is loaded."""
    _open_cached.cache_clear()


@functools.lru_cache(maxsize=2)
def _open_cached(path: str, mtime_ns: int, size: int) -> Any:
    from neutrino.weights.gguf_reader import FastGGUFReader

    try:
        return FastGGUFReader(path)
    except Exception as e:  # the reader raises ValueError/struct/IndexError on garbage
        raise CheckpointError(f"{path}: not a valid GGUF file ({type(e).__name__}: {e})") from e


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value.item() if isinstance(value, np.generic) else value


def _f32(value: Any) -> float:
    """A GGUF float32 as the shortest decimal that round-trips (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _required(reader: Any, key: str, path: Path) -> int:
    value = _field(reader, key)
    if value is None:
        raise CheckpointError(f"{path}: missing GGUF metadata key {key!r} (expected an integer)")
    return int(value)


def _arch(reader: Any, path: Path) -> str:
    arch = _field(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise ConfigError(
            f"{path}: unsupported GGUF architecture {arch!r}; supported: {', '.join(GGUF_ARCHITECTURES)}"
        )
    return arch


def _rope_scaling(reader: Any, arch: str) -> dict[str, Any] | None:
    rope_type = _field(reader, f"{arch}.rope.scaling.type")
    if rope_type in (None, "none"):
        return None
    out: dict[str, Any] = {"rope_type": rope_type}
    if (factor := _field(reader, f"{arch}.rope.scaling.factor")) is not None:
        out["factor"] = _f32(factor)
    if (orig := _field(reader, f"{arch}.rope.scaling.original_context_length")) is not None:
        out["original_max_position_embeddings"] = int(orig)
    return out


def _metadata(reader: Any) -> dict[str, Any]:
    return {k: _field(reader, k) for k in reader.fields if k not in _BIG_ARRAYS and not k.startswith("GGUF.")}


def _vocab_size(reader: Any, arch: str, tensors: dict[str, Any], path: Path) -> int:
    if (vocab := _field(reader, f"{arch}.vocab_size")) is not None:
        return int(vocab)
    if (tokens := reader.fields.get("tokenizer.ggml.tokens")) is not None:
        return len(tokens.data)
    if (embd := tensors.get("token_embd.weight")) is not None:
        return int(embd.shape[-1])
    raise CheckpointError(f"{path}: cannot tell the vocabulary size (no {arch}.vocab_size or token list)")


def _tied(tensors: dict[str, Any]) -> bool:
    out = tensors.get("output.weight")
    if out is None:
        return True
    emb = tensors.get("token_embd.weight")  # llama.cpp's gpt2 converter writes a copy of wte as output
    return (
        emb is not None
        and out.tensor_type == emb.tensor_type
        and out.data.shape == emb.data.shape
        and np.array_equal(out.data, emb.data)
    )


def config_from_reader(reader: Any, path: Path) -> ModelConfig:
    """Build the `ModelConfig` from an open GGUF reader (see `load_gguf_config`)."""
    arch = _arch(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    hidden = _required(reader, f"{arch}.embedding_length", path)
    heads = _required(reader, f"{arch}.attention.head_count", path)
    eps_key = "layer_norm_epsilon" if arch == "gpt2" else "layer_norm_rms_epsilon"
    head_dim = _field(reader, f"{arch}.attention.key_length") or (hidden // heads if heads else 0)
    try:
        return ModelConfig(
            architecture=GGUF_ARCHITECTURES[arch],
            vocab_size=_vocab_size(reader, arch, tensors, path),
            hidden_size=hidden,
            intermediate_size=_required(reader, f"{arch}.feed_forward_length", path),
            num_hidden_layers=_required(reader, f"{arch}.block_count", path),
            num_attention_heads=heads,
            num_key_value_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
            head_dim=int(head_dim),
            max_position_embeddings=_required(reader, f"{arch}.context_length", path),
            rms_norm_eps=_f32(_field(reader, f"{arch}.attention.{eps_key}", 1e-5)),
            rope_theta=_f32(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
            rope_scaling=_rope_scaling(reader, arch),
            tie_word_embeddings=_tied(tensors),
            attention_bias=arch in ("qwen2", "gpt2") or "blk.0.attn_q.bias" in tensors,
            qk_norm=arch == "qwen3",
            hidden_act="gelu_new" if arch == "gpt2" else "silu",
            bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
            eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
            hf_config=_metadata(reader),
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_gguf_config(path: Path) -> ModelConfig:
    """Parse the GGUF metadata of `path` into a `ModelConfig`; `hf_config` holds the raw metadata
    (without the tokenizer's vocabulary arrays). Tied embeddings iff there is no separate `output.weight`."""
    return config_from_reader(open_gguf(path), Path(path))


def _dequantize(tensor: Any, path: Path) -> np.ndarray:
    import gguf

    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as e:
        raise CheckpointError(
            f"{path}: tensor {tensor.name!r} has unsupported GGML type {tensor.tensor_type.name} "
            f"(expected a float or quantized type gguf can dequantize, e.g. F32, F16, BF16, Q8_0, Q4_1)"
        ) from e
    values = values.reshape(tuple(int(d) for d in reversed(tensor.shape))).astype(np.float32, copy=False)
    return values if values.flags.writeable else values.copy()  # F32 comes back as a view of the mmap


def _to_hf(tensor: Any, values: np.ndarray, arch: str, cfg: ModelConfig, path: Path) -> np.ndarray:
    heads = rope_permuted_heads(tensor.name, arch, cfg.num_attention_heads, cfg.num_key_value_heads)
    if heads is not None:
        try:
            values = unpermute_rows(values, heads)
        except ValueError as e:
            raise CheckpointError(f"{path}: tensor {tensor.name!r}: {e}") from e
    if needs_transpose(tensor.name, arch) and values.ndim == 2:
        values = values.T
    return values


def iter_gguf_weights(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(hf_name, float32 tensor)` pairs equal to what the HF checkpoint's state dict holds.

    Quantized tensors are dequantized; llama Q/K rows are un-permuted; GPT-2 Conv1D weights are
    transposed back to [in, out]. `lm_head.weight` is omitted when embeddings are tied."""
    path = Path(path)
    reader = open_gguf(path)
    return iter_reader_weights(reader, path, config_from_reader(reader, path))


def iter_reader_weights(reader: Any, path: Path, cfg: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """`iter_gguf_weights` on an already open reader whose config is `cfg`."""
    arch = _field(reader, "general.architecture")
    for tensor in reader.tensors:
        if tensor.name in IGNORED_GGUF_TENSORS:
            continue
        name = hf_name(tensor.name, arch)
        if name is None:
            raise CheckpointError(f"{path}: unexpected tensor {tensor.name!r} for GGUF architecture {arch!r}")
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        values = _to_hf(tensor, _dequantize(tensor, path), arch, cfg, path)
        out = torch.from_numpy(np.ascontiguousarray(values))
        check_shape(path, name, out, cfg, source=tensor.name)
        yield name, out


def read_gguf_tensors_raw(path: Path) -> list[GGUFTensorInfo]:
    """All tensors of `path` without dequantizing (memory-mapped, except un-permuted llama Q/K)."""
    path = Path(path)
    reader = open_gguf(path)
    cfg = config_from_reader(reader, path)
    arch = _field(reader, "general.architecture")
    infos = []
    for t in reader.tensors:
        data = t.data
        heads = rope_permuted_heads(t.name, arch, cfg.num_attention_heads, cfg.num_key_value_heads)
        if heads is not None:
            data = unpermute_rows(np.asarray(data), heads)
        shape = tuple(int(d) for d in reversed(t.shape))
        infos.append(GGUFTensorInfo(t.name, hf_name(t.name, arch), t.tensor_type.name, shape, data))
    return infos
