"""What compression knows about a model's structure: its decoder layers, their linear layers grouped by
shared input, and the op before each group that per-input-channel scales can be folded into.

Supported: Llama, Mistral, Qwen2 and Qwen3 (transformers classes with `model.layers[i].self_attn.
{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`, `input_layernorm` and `post_attention_layernorm`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from neutrino.errors import ConfigError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


@dataclass(frozen=True)
class Group:
    """Linear layers reading the same input, and `prev`, the op that produces that input."""

    prev: str  # relative to the decoder layer: an RMSNorm or a Linear
    linears: tuple[str, ...]


GROUPS = (
    Group("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    Group("self_attn.v_proj", ("self_attn.o_proj",)),
    Group("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    Group("mlp.up_proj", ("mlp.down_proj",)),
)
LINEARS = tuple(name for group in GROUPS for name in group.linears)


def check_architecture(config: dict) -> str:
    """The architecture named in config.json, or ConfigError listing the supported ones."""
    archs = config.get("architectures") or [config.get("model_type")]
    for arch in archs:
        if arch in SUPPORTED_ARCHITECTURES:
            return arch
    raise ConfigError(f"compression does not support architecture {archs!r}; supported: "
                      f"{', '.join(SUPPORTED_ARCHITECTURES)}")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a loaded transformers causal LM, checked to have the expected linears."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ConfigError(f"{type(model).__name__}: no decoder layers at model.layers")
    for i, layer in enumerate(layers):
        for name in LINEARS:
            module = _get(layer, name)
            if type(module) is not nn.Linear:
                raise ConfigError(f"unsupported layer model.layers.{i}.{name}: {type(module).__name__} "
                                  "(expected torch.nn.Linear)")
    return layers


def iter_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """(HF name, module) of every decoder linear layer, in execution order."""
    for i, layer in enumerate(decoder_layers(model)):
        for name in LINEARS:
            yield f"model.layers.{i}.{name}", layer.get_submodule(name)


def can_fold(layer: nn.Module, group: Group) -> bool:
    """Whether per-channel scales of the group's input can be folded into `prev`: always for a norm; for
    a linear only when its outputs are exactly the group's inputs (v_proj -> o_proj needs as many KV
    heads as query heads)."""
    prev = layer.get_submodule(group.prev)
    first = layer.get_submodule(group.linears[0])
    if isinstance(prev, nn.Linear):
        return prev.out_features == first.in_features
    return getattr(prev, "weight", None) is not None and prev.weight.shape == (first.in_features,)


@torch.no_grad()
def fold_scales(layer: nn.Module, group: Group, s: torch.Tensor) -> None:
    """Divide `prev`'s output channels by `s` [K] and multiply the group's input columns by it: the
    layer computes the same function (exactly, up to float rounding)."""
    prev = layer.get_submodule(group.prev)
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s[:, None].to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:
        prev.weight.div_(s.to(prev.weight.dtype))
    for name in group.linears:
        lin = layer.get_submodule(name)
        lin.weight.mul_(s[None, :].to(lin.weight.dtype))


def _get(layer: nn.Module, name: str) -> nn.Module | None:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        return None
