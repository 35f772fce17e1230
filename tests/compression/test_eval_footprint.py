"""Size on disk and in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from neutrino.compression.evaluate.footprint import disk_size, footprint, memory_size
from neutrino.errors import CheckpointError


def test_disk_size_of_a_directory_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "config.json").write_bytes(b"y" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model-2.gguf").write_bytes(b"z" * 5)
    assert disk_size(tmp_path) == (1015, 1005)
    assert disk_size(tmp_path / "config.json") == (10, 0)
    with pytest.raises(CheckpointError, match="missing"):
        disk_size(tmp_path / "missing")


class Packed(nn.Module):
    """Like the bf16 CPU linear: the weight replaced by a plain tensor attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = None
        self.packed_weight = torch.zeros(4, 8, dtype=torch.bfloat16)  # 64 bytes
        self.register_buffer("scale", torch.ones(4))  # 16 bytes


def test_memory_counts_parameters_buffers_and_packed_tensors_once() -> None:
    model = nn.Module()
    model.embed = nn.Embedding(10, 4)  # 160 bytes
    model.head = nn.Linear(4, 10, bias=False)
    model.head.weight = model.embed.weight  # tied: counted once
    model.proj = Packed()
    assert memory_size(model) == 160 + 64 + 16


def test_footprint_of_the_tiny_engine_model(tiny_llm, tiny_checkpoint) -> None:
    path = tiny_checkpoint("llama", tokenizer=True)
    fp = footprint(path, tiny_llm.engine.runner.model)
    params = sum(t.numel() * 4 for t in tiny_llm.engine.runner.model.parameters())  # float32, no packing
    assert fp.memory_bytes >= params > 0
    assert fp.weights_disk_bytes == (path / "model.safetensors").stat().st_size
    assert fp.disk_bytes > fp.weights_disk_bytes
