"""Checkpoint loading: HF safetensors directories, GGUF files, tokenizers and the embedded default model.

Everything yields HF state-dict names, so model code has one naming scheme to consume. The names below
load on first use, so that importing `neutrino.weights.tokenizer` (the API server process does) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "default_gguf_path": "default", "default_model_dir": "default",
    "GGUFTensorInfo": "gguf_loader", "iter_gguf_weights": "gguf_loader", "load_gguf_config": "gguf_loader",
    "read_gguf_tensors_raw": "gguf_loader",
    "iter_hf_weights": "hf", "load_hf_config": "hf",
    "ResolvedModel": "resolve", "iter_weights": "resolve", "load_model_config": "resolve",
    "resolve_model": "resolve",
    "check_shape": "shapes", "expected_shape": "shapes",
    "load_tokenizer": "tokenizer",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'neutrino.weights' has no attribute {name!r}")
    return getattr(importlib.import_module(f"neutrino.weights.{module}"), name)
