"""Quantized checkpoints and GGUF native on CUDA (the torch path: dequantize per call, `torch._int_mm`
for W8A8 batches over 16 tokens): the same logits as on the CPU. Skipped without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from neutrino import LLM, SamplingParams
from neutrino.config import CacheConfig
from neutrino.runner.model_runner import ModelRunner
from neutrino.weights import iter_weights, load_model_config, resolve_model

sys.path.insert(0, str(Path(__file__).parents[1] / "quant"))  # the reference RTN quantizer of tests/quant
from rtn import quantize_checkpoint  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

FORMATS = {"int8": dict(bits=8), "int4-g32-asym": dict(bits=4, group_size=32, symmetric=False),
           "int3-g32": dict(bits=3, group_size=32), "w8a8": dict(bits=8, scheme="w8a8")}
IDS = list(range(3, 43))


def runner(path: Path, device: str, dtype=torch.float32) -> ModelRunner:
    resolved = resolve_model(str(path))
    cfg = load_model_config(resolved)
    return ModelRunner(cfg, iter_weights(resolved), CacheConfig(block_size=16, num_blocks=8), 256,
                       torch.device(device), dtype, source=str(path))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_quantized_tiny_model_cuda_matches_cpu(tiny_checkpoint, tmp_path, fmt: str) -> None:
    quantize_checkpoint(tiny_checkpoint("llama"), tmp_path / "q", tmp_path / "d", "llama", **FORMATS[fmt])
    for ids in (IDS, IDS[:20]):  # W8A8: _int_mm (more than 16 tokens) and its float fallback
        gpu, cpu = runner(tmp_path / "q", "cuda").score(ids).cpu(), runner(tmp_path / "q", "cpu").score(ids)
        tol = 2e-2 if fmt == "w8a8" else 1e-3  # W8A8: a rounding of x / scale may land differently
        assert float((gpu - cpu).abs().max()) <= tol * max(1.0, float(cpu.abs().max()))
    dense = runner(tmp_path / "d", "cuda").score(IDS).cpu()
    if fmt != "w8a8":
        assert float((runner(tmp_path / "q", "cuda").score(IDS).cpu() - dense).abs().max()) <= 1e-3


def test_gguf_native_cuda_matches_cpu() -> None:
    ids = list(range(100, 140))
    cpu = LLM(gguf_native=True, dtype="float32", device="cpu", num_blocks=16).engine.runner.score(ids)
    llm = LLM(gguf_native=True, dtype="bfloat16", device="cuda", num_blocks=16)
    gpu = llm.engine.runner.score(ids).cpu()
    assert float((gpu[-1] - cpu[-1]).abs().max()) < 0.5 * max(1.0, float(cpu[-1].abs().max())) / 10
    assert int(gpu[-1].argmax()) == int(cpu[-1].argmax())
    out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
    assert "Paris" in out[0].outputs[0].text
