"""Resolve a user's `model` argument to a local checkpoint, and dispatch config/weight loading."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError, InvalidParameterError

if TYPE_CHECKING:
    from neutrino.layers.quant.registry import NativeFormats

DEFAULT_ALIASES = frozenset({"default", "smollm2"})
_EXPECTED = (
    "expected 'default' (or 'smollm2'), a local directory containing config.json and *.safetensors, "
    "or a local .gguf file; Neutrino never downloads models from a hub"
)


@dataclass(frozen=True)
class ResolvedModel:
    """A local checkpoint: `path` is an HF directory (`format="hf"`) or a `.gguf` file; `tokenizer_path`
    where its tokenizer loads fastest (the default GGUF's converted directory), else `path`."""

    path: Path
    format: Literal["hf", "gguf"]
    name: str
    tokenizer_path: Path | None = None


def resolve_model(model: str | os.PathLike[str] | None = None, prefer_gguf: bool = False) -> ResolvedModel:
    """Map `model` (None/"default"/"smollm2", an HF directory, or a .gguf file) to a `ResolvedModel`.
    The default model resolves to its converted HF directory, or with `prefer_gguf` to the packaged GGUF."""
    if model is None or (isinstance(model, str) and model.strip().lower() in DEFAULT_ALIASES):
        from neutrino.weights.default import DEFAULT_MODEL_NAME, default_gguf_path, default_model_dir

        if prefer_gguf:  # same tokenizer as the GGUF's, without rebuilding it from the metadata (~6 s)
            return ResolvedModel(default_gguf_path(), "gguf", DEFAULT_MODEL_NAME, default_model_dir())
        return ResolvedModel(default_model_dir(), "hf", DEFAULT_MODEL_NAME)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"model directory {str(path)!r} has no config.json; {_EXPECTED}")
        return ResolvedModel(path.resolve(), "hf", path.resolve().name)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise CheckpointError(f"model file {str(path)!r} is not a .gguf file; {_EXPECTED}")
        return ResolvedModel(path.resolve(), "gguf", path.stem)
    raise CheckpointError(f"model {str(model)!r} does not exist locally; {_EXPECTED}")


def load_model_config(resolved: ResolvedModel) -> ModelConfig:
    """The `ModelConfig` of a resolved checkpoint."""
    if resolved.format == "gguf":
        from neutrino.weights.gguf_loader import load_gguf_config

        return load_gguf_config(resolved.path)
    from neutrino.weights.hf import load_hf_config

    return load_hf_config(resolved.path)


def iter_weights(resolved: ResolvedModel) -> Iterator[tuple[str, torch.Tensor]]:
    """`(hf_name, tensor)` pairs of a resolved checkpoint: stored dtype for HF, float32 for GGUF."""
    if resolved.format == "gguf":
        from neutrino.weights.gguf_loader import iter_gguf_weights

        return iter_gguf_weights(resolved.path)
    from neutrino.weights.hf import iter_hf_weights

    return iter_hf_weights(resolved.path)


def open_checkpoint(
    resolved: ResolvedModel, cfg: ModelConfig, gguf_native: bool = False, stacked: tuple = ()
) -> tuple[Iterator[tuple[str, torch.Tensor]], NativeFormats | None]:
    """(weights, native formats): with `gguf_native` a GGUF file's Q8_0/Q4_0/Q4_1 tensors keep their
    quantized form (see `weights.gguf_native`; `stacked` are the model's fused layers); otherwise the
    tensors of `iter_weights` and None (an HF checkpoint's own `quantization_config` is read by the
    model runner)."""
    if not gguf_native:
        return iter_weights(resolved), None
    if resolved.format != "gguf":
        raise InvalidParameterError("gguf_native", f"needs a .gguf model, got the HF directory {str(resolved.path)!r}")
    from neutrino.weights.gguf_native import native_gguf_weights

    return native_gguf_weights(resolved.path, cfg, stacked)
