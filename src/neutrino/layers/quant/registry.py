"""Which QuantMethod each linear layer gets: the registry of low-bit methods, `quant_method_for`, and
`LinearQuant`, the factory a model passes to its `Linear`s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError
from neutrino.layers.quant.base import QuantMethod
from neutrino.layers.quant.config import QuantConfig
from neutrino.layers.quant.embedding import quantize_embedding
from neutrino.layers.quant.format import QuantFormat
from neutrino.layers.quant.int4 import Int4WeightOnlyMethod
from neutrino.layers.quant.int8 import Int8WeightOnlyMethod
from neutrino.layers.quant.quantized import QuantizedLinearMethod
from neutrino.layers.quant.w8a8 import W8A8Method
from neutrino.registry import Registry

QUANT_METHODS: Registry[type[QuantizedLinearMethod]] = Registry("quantization method")
QUANT_METHODS.register("int8")(Int8WeightOnlyMethod)
QUANT_METHODS.register("int4")(Int4WeightOnlyMethod)
QUANT_METHODS.register("w8a8")(W8A8Method)


def method_name(fmt: QuantFormat) -> str:
    """Registry key of the method running `fmt`."""
    if fmt.scheme == "w8a8":
        return "w8a8"
    return "int8" if fmt.bits == 8 else "int4"


def quant_method_for(
    config: QuantConfig | QuantFormat | None, module_name: str, source: str = "checkpoint"
) -> QuantizedLinearMethod | None:
    """The QuantMethod of HF module `module_name` (e.g. `model.layers.0.mlp.down_proj`), or None for a
    dense layer (no config, or the module is in `config.ignore`)."""
    if config is None:
        return None
    if isinstance(config, QuantConfig):
        if config.is_ignored(module_name):
            return None
        config = QuantFormat.from_config(config)
    return QUANT_METHODS.get(method_name(config))(config, source)


def quant_config_of(cfg: ModelConfig, source: str = "config.json") -> QuantConfig | None:
    """The checkpoint's `quantization_config` (CheckpointError naming `source` when malformed)."""
    raw = cfg.hf_config.get("quantization_config")
    return None if raw is None else QuantConfig.from_dict(raw, source)


@dataclass(frozen=True)
class NativeFormats:
    """Per-module formats of a checkpoint whose tensors are loaded in their stored quantized form (GGUF
    with `gguf_native`): HF module name -> format; `embedding`: the token embedding table's format."""

    modules: Mapping[str, QuantFormat] = field(default_factory=dict)
    embedding: QuantFormat | None = None


class LinearQuant:
    """Chooses each `Linear`'s QuantMethod from a checkpoint's `QuantConfig` or `NativeFormats`.

    A `Linear`'s prefix is its HF module name, except for fused layers (e.g. `...self_attn.qkv_proj`),
    which the model's `stacked_params` expand into the checkpoint's modules (`q_proj`, `k_proj`,
    `v_proj`); all of them must get the same format."""

    def __init__(self, spec: QuantConfig | NativeFormats, stacked: tuple[tuple[str, str, int], ...] = (),
                 source: str = "checkpoint") -> None:
        self.spec, self.stacked, self.source = spec, stacked, source

    @property
    def embedding_format(self) -> QuantFormat | None:
        return self.spec.embedding if isinstance(self.spec, NativeFormats) else None

    def part_names(self, prefix: str) -> list[str]:
        """The checkpoint modules behind layer `prefix`."""
        head, _, last = prefix.rpartition(".")
        parts = [part for fused, part, _ in self.stacked if fused == last]
        return [f"{head}.{p}" if head else p for p in parts] or [prefix]

    def format_for(self, module_name: str) -> QuantFormat | None:
        if isinstance(self.spec, QuantConfig):
            return None if self.spec.is_ignored(module_name) else QuantFormat.from_config(self.spec)
        return self.spec.modules.get(module_name)

    def method_for(self, prefix: str) -> QuantMethod | None:
        """The method for the `Linear` named `prefix`, None for a dense one."""
        names = self.part_names(prefix)
        formats = {self.format_for(n) for n in names}
        if len(formats) > 1:
            raise CheckpointError(
                f"{self.source}: {names} are fused into {prefix} and must share one format, got "
                f"{[self.format_for(n) for n in names]} (list all or none of them in quantization_config.ignore)"
            )
        fmt = formats.pop()
        return None if fmt is None else quant_method_for(fmt, prefix, self.source)

    def prepare_model(self, model: nn.Module, tensor_names: set[str] | None = None) -> None:
        """Before loading: swap in a `QuantizedEmbedding` when the token embedding table is stored quantized
        (GGUF native; or a Neutrino checkpoint whose embeddings are not ignored and has their `qweight`;
        `tensor_names`: the checkpoint's tensor names when the loader can list them)."""
        name = next((n for n, child in model.named_children() if child is model.input_embeddings()), None)
        fmt = self.embedding_format
        if name is not None and isinstance(self.spec, QuantConfig) and self._has_quantized_table(name, tensor_names):
            fmt = QuantFormat.from_config(self.spec)
        if fmt is not None:
            assert name is not None, "the token embeddings must be a direct child of the model"
            method = quant_method_for(fmt, name, self.source)
            assert method is not None
            quantize_embedding(model, method, name)

    def _has_quantized_table(self, name: str, names: set[str] | None) -> bool:
        """Whether the QuantConfig checkpoint stores the embedding table `name` (model module name, e.g.
        `embed_tokens`) as codes: not in `ignore`, and (when the checkpoint's tensor names can be listed)
        a `<...>.qweight` of it exists, so older checkpoints with dense embeddings keep loading."""
        assert isinstance(self.spec, QuantConfig)
        if self.spec.is_ignored(name) or self.spec.is_ignored(f"model.{name}"):
            return False
        return names is None or any(n == f"{name}.qweight" or n.endswith(f".{name}.qweight") for n in names)

    def __repr__(self) -> str:
        kind: Any = self.spec if isinstance(self.spec, QuantConfig) else f"{len(self.spec.modules)} native modules"
        return f"LinearQuant({kind})"
