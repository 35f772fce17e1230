"""Hugging Face checkpoints: `config.json` -> `ModelConfig`, and safetensors weight iteration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError, ConfigError

SUPPORTED_HF_ARCHITECTURES: tuple[str, ...] = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GPT2LMHeadModel",
)
_MODEL_TYPE_TO_ARCH = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}
INDEX_FILE = "model.safetensors.index.json"


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`; CheckpointError naming the file if missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read file ({e.strerror})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _architecture(d: dict[str, Any], path: Path) -> str:
    archs = d.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    for arch in archs:
        if arch in SUPPORTED_HF_ARCHITECTURES:
            return arch
    if not archs and d.get("model_type") in _MODEL_TYPE_TO_ARCH:
        return _MODEL_TYPE_TO_ARCH[d["model_type"]]
    found = archs or d.get("model_type")
    raise ConfigError(
        f"{path}: unsupported architecture {found!r}; supported: {', '.join(SUPPORTED_HF_ARCHITECTURES)}"
    )


def _int(d: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = d.get(key)
    if value is None:
        value = default
    if value is None:
        raise CheckpointError(f"{path}: missing required key {key!r} (expected a positive integer)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{path}: key {key!r} must be an integer, got {value!r}")
    return value


def _float(d: dict[str, Any], key: str, path: Path, default: float) -> float:
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{path}: key {key!r} must be a number, got {value!r}")
    return float(value)


def parse_rope(d: dict[str, Any], path: Path) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from transformers-5 `rope_parameters` or legacy top-level keys.

    The scaling dict always carries `rope_type` and is None for the default (unscaled) rope."""
    params = d.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        theta = _float(params, "rope_theta", path, 10000.0)
        scaling: Any = params
    else:
        theta = _float(d, "rope_theta", path, 10000.0)
        scaling = d.get("rope_scaling")
    if scaling is None:
        return theta, None
    if not isinstance(scaling, dict):
        raise CheckpointError(f"{path}: rope scaling must be an object, got {scaling!r}")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, None
    out = {k: v for k, v in scaling.items() if k not in ("rope_theta", "type")}
    out["rope_type"] = rope_type
    return theta, out


def _gpt2_config(d: dict[str, Any], path: Path) -> ModelConfig:
    hidden = _int(d, "n_embd", path)
    heads = _int(d, "n_head", path)
    if heads <= 0 or hidden % heads:
        raise CheckpointError(f"{path}: n_embd={hidden} is not divisible by n_head={heads}")
    return ModelConfig(
        architecture="GPT2LMHeadModel",
        vocab_size=_int(d, "vocab_size", path),
        hidden_size=hidden,
        intermediate_size=_int(d, "n_inner", path, 4 * hidden),
        num_hidden_layers=_int(d, "n_layer", path),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=_int(d, "n_positions", path, 1024),
        rms_norm_eps=_float(d, "layer_norm_epsilon", path, 1e-5),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
        attention_bias=True,
        hidden_act=str(d.get("activation_function", "gelu_new")),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        torch_dtype=d.get("dtype") or d.get("torch_dtype"),
        hf_config=d,
    )


def _sliding_window(d: dict[str, Any], arch: str) -> int | None:
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and not d.get("use_sliding_window", False):
        return None
    if arch == "LlamaForCausalLM":
        return None
    window = d.get("sliding_window")
    return window if isinstance(window, int) and not isinstance(window, bool) else None


def _decoder_config(d: dict[str, Any], arch: str, path: Path) -> ModelConfig:
    hidden = _int(d, "hidden_size", path)
    heads = _int(d, "num_attention_heads", path)
    if heads <= 0 or (hidden % heads and d.get("head_dim") is None):
        raise CheckpointError(f"{path}: hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    theta, scaling = parse_rope(d, path)
    qwen2 = arch == "Qwen2ForCausalLM"
    return ModelConfig(
        architecture=arch,
        vocab_size=_int(d, "vocab_size", path),
        hidden_size=hidden,
        intermediate_size=_int(d, "intermediate_size", path),
        num_hidden_layers=_int(d, "num_hidden_layers", path),
        num_attention_heads=heads,
        num_key_value_heads=_int(d, "num_key_value_heads", path, heads),
        head_dim=_int(d, "head_dim", path, hidden // heads),
        max_position_embeddings=_int(d, "max_position_embeddings", path, 2048),
        rms_norm_eps=_float(d, "rms_norm_eps", path, 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=True if qwen2 else bool(d.get("attention_bias", False)),
        qk_norm=arch == "Qwen3ForCausalLM",
        hidden_act=str(d.get("hidden_act", "silu")),
        sliding_window=_sliding_window(d, arch),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        torch_dtype=d.get("dtype") or d.get("torch_dtype"),
        hf_config=d,
    )


def load_hf_config(model_dir: Path) -> ModelConfig:
    """Parse `model_dir/config.json` into a `ModelConfig`.

    `eos_token_id` is taken from `generation_config.json` when that file sets it (instruct models often
    list extra end-of-turn ids there), else from `config.json`."""
    path = Path(model_dir) / "config.json"
    d = read_json(path)
    arch = _architecture(d, path)
    try:
        cfg = _gpt2_config(d, path) if arch == "GPT2LMHeadModel" else _decoder_config(d, arch, path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    gen_path = Path(model_dir) / "generation_config.json"
    if gen_path.is_file():
        gen_eos = read_json(gen_path).get("eos_token_id")
        if gen_eos is not None and gen_eos != cfg.eos_token_id:
            cfg = replace(cfg, eos_token_id=gen_eos)
    return cfg


def checkpoint_tensor_names(source: str | Path) -> set[str] | None:
    """Tensor names of the safetensors checkpoint directory `source` (headers only), None when `source`
    is not one."""
    from safetensors import safe_open

    path = Path(source)
    if not path.is_dir() or not any(path.glob("*.safetensors")):
        return None
    names: set[str] = set()
    for f in safetensors_files(path):
        with safe_open(str(f), framework="pt") as handle:
            names.update(handle.keys())
    return names


def safetensors_files(model_dir: Path) -> list[Path]:
    """The safetensors files of `model_dir`: the shards named by the index file, else `*.safetensors`."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(
                f"{index}: missing or empty 'weight_map' (expected tensor name -> shard file)"
            )
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index}: shard {f.name!r} listed in weight_map does not exist")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        extra = (
            " (only *.safetensors is supported, not pytorch_model.bin)"
            if any(model_dir.glob("*.bin"))
            else ""
        )
        raise CheckpointError(f"{model_dir}: no *.safetensors weights found{extra}")
    return files


def iter_hf_weights(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(hf_name, tensor)` for every tensor in the directory's safetensors files, in stored dtype.

    A missing weights file raises CheckpointError at call time, not on first iteration."""
    return _iter_files(safetensors_files(model_dir))


def _iter_files(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, f.get_tensor(name)
        except SafetensorError as e:
            raise CheckpointError(f"{file}: cannot read safetensors file ({e})") from e
