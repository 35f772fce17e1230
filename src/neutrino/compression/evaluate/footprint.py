"""Model size on disk (checkpoint files) and in memory (every tensor the model's modules hold)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neutrino.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class Footprint:
    """Bytes on disk (all files / weight files only) and bytes of tensors held by the loaded model."""

    disk_bytes: int
    weights_disk_bytes: int
    memory_bytes: int  # parameters, buffers and tensor attributes (packed/quantized weights), deduplicated

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def disk_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(all bytes, weight-file bytes) of a checkpoint file or directory (recursively)."""
    path = Path(path)
    if path.is_file():
        size = path.stat().st_size
        return size, size if path.name.endswith(WEIGHT_SUFFIXES) else 0
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    total = weights = 0
    for f in sorted(path.rglob("*")):
        if f.is_file():
            size = f.stat().st_size
            total += size
            weights += size if f.name.endswith(WEIGHT_SUFFIXES) else 0
    return total, weights


def module_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor attached to a module of `model`: parameters, buffers and plain tensor attributes
    (e.g. a pre-packed `packed_weight` that replaced `weight`), each storage counted once."""
    seen: set[tuple[str, int]] = set()
    tensors: list[torch.Tensor] = []
    for module in model.modules():
        candidates = list(module._parameters.values()) + list(module._buffers.values())
        candidates += [v for v in vars(module).values() if isinstance(v, torch.Tensor)]
        for t in candidates:
            if t is None:
                continue
            key = _storage_key(t)
            if key not in seen:
                seen.add(key)
                tensors.append(t)
    return tensors


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the tensor's storage (whole storage: views share it, so count storages, not views)."""
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):  # opaque layouts (mkldnn) have no plain storage
        return t.numel() * t.element_size()


def memory_size(model: nn.Module) -> int:
    """Bytes of every tensor held by `model` (see `module_tensors`); the KV cache is not included."""
    return sum(tensor_bytes(t) for t in module_tensors(model))


def footprint(checkpoint: str | os.PathLike[str], model: nn.Module) -> Footprint:
    """Footprint of a checkpoint on disk and of the model built from it in memory."""
    total, weights = disk_size(checkpoint)
    return Footprint(total, weights, memory_size(model))


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    try:
        return (str(t.device), t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return ("opaque", id(t))
