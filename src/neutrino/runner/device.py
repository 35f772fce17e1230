"""Device and dtype choices: configuration, not code forks."""

from __future__ import annotations

import logging

import torch

from neutrino.errors import ConfigError
from neutrino.kernels.torch_features import cpu_has_bf16_gemm

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; expected auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 (AMX/AVX-512 BF16, tensor cores), or float32 on a CPU whose oneDNN has no bf16
    GEMM (see `cpu_has_bf16_gemm`); otherwise one of float32, bfloat16, float16."""
    if isinstance(name, torch.dtype):
        if name not in _DTYPES.values():
            raise ConfigError(f"unsupported dtype {name}; expected float32, bfloat16 or float16")
        return name
    if name == "auto":
        if device.type == "cpu" and not cpu_has_bf16_gemm():
            logger.info("dtype auto: float32, because this CPU has no bf16 GEMM in oneDNN (no AVX-512)")
            return torch.float32
        return torch.bfloat16
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; expected auto, float32, bfloat16 or float16") from None

