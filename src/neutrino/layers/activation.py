"""Activation functions by HF name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from neutrino.errors import ConfigError
from neutrino.layers.attention import cpu_kernels

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
    """[T, 2 * I] (gate | up) -> [T, I] = silu(gate) * up (one fused pass on CPU)."""
    size = x.shape[-1] // 2
    if x.dim() == 2 and x.stride(1) == 1 and cpu_kernels.fused_supported(x, size):
        out = torch.empty(x.shape[0], size, dtype=x.dtype)
        torch.ops.neutrino_cpu.silu_and_mul_out(out, x)
        return out
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
