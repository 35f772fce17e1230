"""Shared helpers of the quantized-checkpoint tests: the formats under test and a runner loader."""

from __future__ import annotations

from pathlib import Path

import torch

from neutrino.config import CacheConfig
from neutrino.runner.model_runner import ModelRunner
from neutrino.weights import iter_weights, load_model_config, resolve_model

# name -> quantize_checkpoint keyword arguments: every format the engine runs
FORMATS = {
    "int8-sym": dict(bits=8),
    "int8-asym": dict(bits=8, symmetric=False),
    "int8-g32": dict(bits=8, group_size=32),
    "int4-g32-sym": dict(bits=4, group_size=32),
    "int4-g32-asym": dict(bits=4, group_size=32, symmetric=False),
    "int4-per-channel": dict(bits=4, group_size=-1),
    "int3-g32": dict(bits=3, group_size=32),
    "w8a8": dict(bits=8, scheme="w8a8"),
}


def load_runner(path: Path, dtype: torch.dtype = torch.float32, num_blocks: int = 8) -> ModelRunner:
    """A ModelRunner through the real loaders (the runner reads `quantization_config` itself)."""
    resolved = resolve_model(str(path))
    cfg = load_model_config(resolved)
    return ModelRunner(cfg, iter_weights(resolved), CacheConfig(block_size=16, num_blocks=num_blocks),
                       min(cfg.max_position_embeddings, 256), torch.device("cpu"), dtype, source=str(path))
