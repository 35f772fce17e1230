"""Activation functions by HF name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from neutrino.errors import ConfigError

_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function for an HF `hidden_act` / `activation_function` name."""
    try:
        return _ACTS[name]
    except KeyError:
        raise ConfigError(f"unsupported activation {name!r}; supported: {', '.join(_ACTS)}") from None


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2 * I] (gate | up) -> [T, I] = silu(gate) * up."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
