"""Checkpoint loading: HF safetensors directories, GGUF files, tokenizers and the embedded default model.

Everything yields HF state-dict names, so model code has one naming scheme to consume.
"""

from neutrino.weights.default import default_gguf_path, default_model_dir
from neutrino.weights.gguf_loader import (
    GGUFTensorInfo,
    iter_gguf_weights,
    load_gguf_config,
    read_gguf_tensors_raw,
)
from neutrino.weights.hf import iter_hf_weights, load_hf_config
from neutrino.weights.resolve import ResolvedModel, iter_weights, load_model_config, resolve_model
from neutrino.weights.shapes import check_shape, expected_shape
from neutrino.weights.tokenizer import load_tokenizer

__all__ = [
    "GGUFTensorInfo",
    "ResolvedModel",
    "check_shape",
    "default_gguf_path",
    "default_model_dir",
    "expected_shape",
    "iter_gguf_weights",
    "iter_hf_weights",
    "iter_weights",
    "load_gguf_config",
    "load_hf_config",
    "load_model_config",
    "load_tokenizer",
    "read_gguf_tensors_raw",
    "resolve_model",
]
