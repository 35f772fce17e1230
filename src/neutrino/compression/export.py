"""Writing compressed checkpoints, atomically.

A checkpoint directory holds `model.safetensors`, `config.json` and the source's other files
(tokenizer, chat template, generation config), plus `recipe.yaml`:
- quantized: each quantized linear's (and a quantized embedding table's) `weight` is replaced by
  `qweight`/`scales`/`zeros` and config.json gets `quantization_config` = `QuantConfig(...).to_dict()`
  (see `neutrino.layers.quant.config`); tied embeddings stay tied only when the table and lm_head are
  both dense or both quantized (then `model.embed_tokens.*` alone stores them);
- pruned only: a normal dense checkpoint; config.json records `neutrino_sparsity`.
Dense tensors keep the source's dtype. Output goes to a temporary sibling directory that is renamed
into place once complete; the source directory is only read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neutrino.compression.quantize.grid import dequantize_tensors
from neutrino.errors import CheckpointError, ConfigError
from neutrino.layers.quant.config import QuantConfig

WEIGHTS_FILE, RECIPE_FILE = "model.safetensors", "recipe.yaml"
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".safetensors.index.json", ".bin.index.json")
_OWN_FILES = ("config.json", RECIPE_FILE, "report.md", "eval_plot.png", "results.json")


def check_output(source: Path, out: Path, overwrite: bool) -> None:
    """Refuse an `out` that exists (unless `overwrite`), is not a directory, or overlaps the source."""
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConfigError(f"output {str(out)!r} overlaps the source model {str(source)!r}; the source is never "
                          "written to: choose another --out")
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"output {str(out)!r} exists and is not a directory")
    if dst.exists() and not overwrite:
        raise ConfigError(f"output {str(out)!r} already exists; pass --overwrite (overwrite=True) to replace it")


def temp_dir_for(out: Path) -> Path:
    """A fresh temporary directory next to `out` (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def publish(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`; an existing `out` (already allowed by `check_output`) is
    renamed aside first and deleted only after the new directory is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "dir")
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old / "dir", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(model: nn.Module, source: Path, out: Path, quantized: dict[str, Any],
                     quant_config: QuantConfig | None, sparsity: dict[str, Any] | None, recipe_text: str,
                     tied: bool | None = None) -> None:
    """Write the compressed `model` into the existing directory `out` (see the module docstring); `tied`:
    whether the output keeps tied embeddings (None: the source's, unless lm_head is quantized)."""
    from safetensors.torch import save_file

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    dtype = _dtype(config)
    was_tied = bool(config.get("tie_word_embeddings", False))
    if tied is None:
        tied = was_tied and "lm_head" not in quantized
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        module = name.rpartition(".")[0]
        if (module in quantized and name.endswith(".weight")) or (tied and name == "lm_head.weight"):
            continue
        tensors[name] = tensor.detach().to(dtype).contiguous()
    for module, qw in quantized.items():
        tensors.update(qw.tensors(module))
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if was_tied and not tied:
        config["tie_word_embeddings"] = False
    if quant_config is not None:
        config["quantization_config"] = quant_config.to_dict()
    elif sparsity is not None:
        config["neutrino_sparsity"] = sparsity
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
    copy_side_files(source, out)


def copy_side_files(source: Path, out: Path) -> None:
    """Copy the source's files other than weights and config.json (tokenizer, templates, ...)."""
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.endswith(_NOT_COPIED) and path.name not in _OWN_FILES:
            shutil.copy2(path, out / path.name)


def dequantize_checkpoint(qdir: Path, out: Path) -> None:
    """Write a dense float32 checkpoint equivalent to the quantized one in `qdir` (codes dequantized by
    the format's formula) into the existing directory `out`: the fake-quantized model."""
    from safetensors.torch import load_file, save_file

    config = json.loads((qdir / "config.json").read_text(encoding="utf-8"))
    qc = QuantConfig.from_dict(config.pop("quantization_config"), str(qdir / "config.json"))
    tensors = load_file(str(qdir / WEIGHTS_FILE))
    dense: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        prefix, _, kind = name.rpartition(".")
        if kind == "qweight":
            dense[f"{prefix}.weight"] = dequantize_tensors(tensor, tensors[f"{prefix}.scales"],
                                                           tensors.get(f"{prefix}.zeros"), qc.bits, qc.symmetric)
        elif kind not in ("scales", "zeros") or f"{prefix}.qweight" not in tensors:
            dense[name] = tensor.float() if tensor.is_floating_point() else tensor
    save_file(dense, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config["dtype"] = "float32"
    config["neutrino_fake_quantized"] = {"from": str(qdir), **qc.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    copy_side_files(qdir, out)


def _dtype(config: dict[str, Any]) -> torch.dtype:
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointError(f"config.json: unsupported dtype {name!r}")
    return dtype
