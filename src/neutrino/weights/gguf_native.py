"""GGUF tensors in their native quantized form (`gguf_native`): Q8_0, Q4_0 and Q4_1 linear weights (and
the token embedding table) are yielded as Neutrino checkpoint tensors for the low-bit kernels instead of
being dequantized; every other tensor is dequantized as `iter_gguf_weights` does.

Exact mappings (blocks of 32 weights along the input dimension, fp16 `d`/`m` widened to float32):
- Q8_0 (d, 32 int8 q): w = d * q -> bits 8, group 32, symmetric: `qweight` int8 [N, K], `scales` = d.
- Q4_1 (d, m, 16 bytes q): w = d * q + m -> bits 4, group 32, zero kind "min": `qweight` (two codes per
  byte, element 2j low), `scales` = d, `mins` = m.
- Q4_0 (d, 16 bytes q): w = d * (q - 8) -> the same with `mins` = -8 d.
A fused layer (q|k|v, gate|up) is native only when all its parts have the same native type; otherwise
all of them are dequantized.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError
from neutrino.layers.quant.format import QuantFormat
from neutrino.layers.quant.registry import NativeFormats
from neutrino.weights.gguf_loader import _dequantize, _field, _to_hf, open_gguf
from neutrino.weights.gguf_names import (
    IGNORED_GGUF_TENSORS,
    hf_name,
    needs_transpose,
    rope_permuted_heads,
    unpermute_rows,
)
from neutrino.weights.shapes import check_shape

NATIVE_TYPES: dict[str, QuantFormat] = {
    "Q8_0": QuantFormat(8, 32, "none"),
    "Q4_0": QuantFormat(4, 32, "min"),
    "Q4_1": QuantFormat(4, 32, "min"),
}
_EMBEDDINGS = ("model.embed_tokens", "transformer.wte")

Stacked = tuple[tuple[str, str, int], ...]


def native_gguf_weights(path: Path, cfg: ModelConfig, stacked: Stacked = ()) -> tuple[Iterator, NativeFormats]:
    """(weights iterator, formats) of the GGUF file `path` for a model with fused layers `stacked`."""
    path = Path(path)
    reader = open_gguf(path)
    formats = plan_formats(reader, cfg, stacked)
    return _iter(reader, path, cfg, formats), formats


def _module_types(reader: Any, cfg: ModelConfig) -> dict[str, str]:
    """HF module name -> GGML type of every 2-D `.weight` tensor of a native type (not position tables)."""
    arch = _field(reader, "general.architecture")
    out = {}
    for t in reader.tensors:
        name = hf_name(t.name, arch)
        if name is None or not name.endswith(".weight") or len(t.shape) != 2 or t.tensor_type.name not in NATIVE_TYPES:
            continue
        if (name == "lm_head.weight" and cfg.tie_word_embeddings) or name == "transformer.wpe.weight":
            continue
        out[name[: -len(".weight")]] = t.tensor_type.name
    return out


def plan_formats(reader: Any, cfg: ModelConfig, stacked: Stacked) -> NativeFormats:
    """Which modules load natively: native types, and fused groups only when all parts share one type."""
    types = _module_types(reader, cfg)
    for fused in {f for f, _, _ in stacked}:
        parts = [p for f, p, _ in stacked if f == fused]
        heads = {n[: -len(p)] for n in types for p in parts if n.endswith(f".{p}")}
        for head in heads:
            members = [head + p for p in parts]
            if len({types.get(m) for m in members}) > 1:
                for m in members:
                    types.pop(m, None)
    embedding = next((types.pop(e) for e in _EMBEDDINGS if e in types), None)
    return NativeFormats({m: NATIVE_TYPES[t] for m, t in types.items()},
                         NATIVE_TYPES[embedding] if embedding else None)


def _iter(reader: Any, path: Path, cfg: ModelConfig, formats: NativeFormats) -> Iterator[tuple[str, torch.Tensor]]:
    arch = _field(reader, "general.architecture")
    native = set(formats.modules) | (set(_EMBEDDINGS) if formats.embedding else set())
    for tensor in reader.tensors:
        if tensor.name in IGNORED_GGUF_TENSORS:
            continue
        name = hf_name(tensor.name, arch)
        if name is None:
            raise CheckpointError(f"{path}: unexpected tensor {tensor.name!r} for GGUF architecture {arch!r}")
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        module = name[: -len(".weight")]
        if module in native and tensor.tensor_type.name in NATIVE_TYPES:
            yield from native_tensors(tensor, module, arch, cfg, path)
            continue
        values = _to_hf(tensor, _dequantize(tensor, path), arch, cfg, path)
        out = torch.from_numpy(np.ascontiguousarray(values))
        check_shape(path, name, out, cfg, source=tensor.name)
        yield name, out


def native_tensors(tensor: Any, module: str, arch: str, cfg: ModelConfig, path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """`module.qweight`, `.scales` (and `.mins`) of one Q8_0/Q4_0/Q4_1 tensor, rows in HF order."""
    n, k = (int(d) for d in reversed(tensor.shape))
    hf_shape = (k, n) if needs_transpose(tensor.name, arch) else (n, k)  # GPT-2's HF Conv1D is [in, out]
    check_shape(path, f"{module}.weight", torch.empty(hf_shape, device="meta"), cfg, source=tensor.name)
    data = np.asarray(tensor.data)
    heads = rope_permuted_heads(tensor.name, arch, cfg.num_attention_heads, cfg.num_key_value_heads)
    if heads is not None:
        data = unpermute_rows(data, heads)
    kind = tensor.tensor_type.name
    blocks = data.reshape(n, k // 32, -1)
    d = torch.from_numpy(blocks[..., :2].copy().view(np.float16).reshape(n, k // 32).astype(np.float32))
    if kind == "Q8_0":
        yield f"{module}.qweight", torch.from_numpy(blocks[..., 2:].copy().view(np.int8).reshape(n, k))
        yield f"{module}.scales", d
        return
    if kind == "Q4_1":
        m = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16).reshape(n, k // 32).astype(np.float32))
    else:
        m = -8.0 * d
    qs = blocks[..., 4:] if kind == "Q4_1" else blocks[..., 2:]  # [n, G, 16]: element j low, 16 + j high
    yield f"{module}.qweight", torch.from_numpy(repack_q4(qs).reshape(n, k // 2))
    yield f"{module}.scales", d
    yield f"{module}.mins", m


def repack_q4(qs: np.ndarray) -> np.ndarray:
    """GGML Q4 block bytes [..., 16] (element j in the low nibble of byte j, element 16 + j in its high
    nibble) -> Neutrino's packing [..., 16] (elements 2t, 2t + 1 in the low, high nibble of byte t).
    numpy, single-threaded: loading is not worth OpenMP regions that a busy machine can stall."""
    v = np.ascontiguousarray(qs).view(np.uint16)  # [..., 8]: byte 2t (element 2t) low, byte 2t + 1 high
    low = v & 0x0F0F  # elements 2t, 2t + 1 (t < 8) as the low nibbles of two bytes
    high = (v >> 4) & 0x0F0F  # elements 16 + 2t, 17 + 2t
    return np.concatenate([(low | (low >> 4)) & 0xFF, (high | (high >> 4)) & 0xFF], axis=-1).astype(np.uint8)
