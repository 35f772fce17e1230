"""Quantized token embeddings in Neutrino checkpoints (`neutrino compress` with `model.embed_tokens` not
skipped): what is written (one tensor set for a tied pair, the `ignore` list), the engine loading it as a
`QuantizedEmbedding` with the same logits as the dequantized dense twin, one copy of the table in memory
(quantized, and dense tied heads too), less memory than with dense embeddings, and shape errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from quant_helpers import load_runner
from safetensors.torch import load_file, save_file

from neutrino.compression.api import compress
from neutrino.compression.evaluate.footprint import memory_size, module_tensors
from neutrino.compression.export import dequantize_checkpoint
from neutrino.errors import CheckpointError
from neutrino.layers.quant.base import UnquantizedLinearMethod
from neutrino.layers.quant.embedding import QuantizedEmbedding

IDS = list(range(3, 43))
RECIPES = {"int8": {"method": "rtn", "bits": 8}, "int4-g32": {"method": "rtn", "bits": 4, "group_size": 32}}
CASES = [("llama", True), ("qwen2", False)]  # (family, tied embeddings)


def _compress(src: Path, out: Path, bits: str, skip: list[str] | None) -> tuple[Path, Path]:
    """(quantized dir, its dequantized float32 twin)."""
    recipe: dict = {"quantize": RECIPES[bits]}
    if skip is not None:
        recipe["skip"] = skip
    compress(src, recipe, out / "q", evaluate=False, progress=False)
    (out / "dense").mkdir()
    dequantize_checkpoint(out / "q", out / "dense")
    return out / "q", out / "dense"


def _big_float_tensors(model: torch.nn.Module, numel: int) -> list[torch.Tensor]:
    """Floating tensors of at least `numel` elements the model holds (each storage once)."""
    return [t for t in module_tensors(model) if t.is_floating_point() and t.numel() >= numel]


@pytest.mark.parametrize("bits", list(RECIPES))
@pytest.mark.parametrize(("family", "tied"), CASES)
def test_quantized_embeddings_match_dequantized_twin(tiny_checkpoint, tmp_path, family: str, tied: bool,
                                                     bits: str) -> None:
    src = tiny_checkpoint(family, tie=tied)
    quant, dense = _compress(src, tmp_path, bits, [])
    config = json.loads((quant / "config.json").read_text())
    assert config["quantization_config"]["ignore"] == [] and config.get("tie_word_embeddings", False) is tied
    tensors = load_file(quant / "model.safetensors")
    assert "model.embed_tokens.qweight" in tensors and "model.embed_tokens.weight" not in tensors
    assert ("lm_head.qweight" in tensors) is not tied and "lm_head.weight" not in tensors
    assert "model.embed_tokens.weight" in load_file(dense / "model.safetensors")

    runner = load_runner(quant)
    model = runner.model
    table = model.input_embeddings()
    assert isinstance(table, QuantizedEmbedding) and (model.lm_head is table) is tied
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    assert _big_float_tensors(model, vocab * hidden) == []  # no dense copy of the table or the head
    for ids in (IDS, IDS[:3]):  # prefill-sized (dequantize + GEMM) and decode-sized (kernel) batches
        ours, ref = runner.score(ids), load_runner(dense).score(ids)
        assert float((ours - ref).abs().max()) <= 1e-4

    dense_embed, _ = _compress(src, tmp_path / "default", bits, None)  # default skip: lm_head, embeddings
    assert json.loads((dense_embed / "config.json").read_text())["quantization_config"]["ignore"] == [
        "lm_head", "model.embed_tokens"]
    smaller = memory_size(model)
    assert smaller < memory_size(load_runner(dense_embed).model) - vocab * hidden * 4 // 2


def test_tied_embeddings_quantized_head_dense(tiny_checkpoint, tmp_path) -> None:
    """Tied source, embeddings quantized, lm_head skipped: untied, the original dense head is written."""
    src = tiny_checkpoint("llama", tie=True)
    quant, dense = _compress(src, tmp_path, "int8", ["lm_head"])
    config = json.loads((quant / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["quantization_config"]["ignore"] == ["lm_head"]
    tensors = load_file(quant / "model.safetensors")
    source_table = load_file(src / "model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(tensors["lm_head.weight"], source_table) and "model.embed_tokens.qweight" in tensors
    runner = load_runner(quant)
    assert isinstance(runner.model.input_embeddings(), QuantizedEmbedding)
    assert isinstance(runner.model.lm_head.quant_method, UnquantizedLinearMethod)
    assert float((runner.score(IDS) - load_runner(dense).score(IDS)).abs().max()) <= 1e-4


def test_bad_embedding_shape_names_the_tensor(tiny_checkpoint, tmp_path) -> None:
    quant, _ = _compress(tiny_checkpoint("llama", tie=True), tmp_path, "int4-g32", [])
    bad = tmp_path / "bad"
    shutil.copytree(quant, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["model.embed_tokens.scales"] = tensors["model.embed_tokens.scales"][:, :1].contiguous()
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"embed_tokens\.scales' has shape \[512, 1\], expected \[512, 2\]"):
        load_runner(bad)


def test_dense_tied_head_shares_the_table(tiny_checkpoint) -> None:
    """bf16 engine, dense tied checkpoint: the head takes the embedding table (one loaded tensor), and on
    CPU keeps a prepacked oneDNN copy of it for speed; it computes the table's logits."""
    model_dir = tiny_checkpoint("llama", tie=True)
    model = load_runner(model_dir, torch.bfloat16).model
    table, head = model.input_embeddings(), model.lm_head
    packed = getattr(head, "packed_weight", None)
    assert head.weight is None and packed is not None or head.weight.data_ptr() == table.weight.data_ptr()
    x = torch.randn(3, table.weight.shape[1], dtype=torch.bfloat16)
    want = torch.nn.functional.linear(x.float(), table.weight.float())
    assert float((head(x).float() - want).abs().max()) <= 2e-2 * float(want.abs().max())


def test_greedy_generation_matches_dequantized_twin(tiny_checkpoint, tmp_path) -> None:
    """Through `LLM` (tied pair quantized to int4, SmolLM2's vocabulary): same greedy tokens as the twin."""
    from neutrino import LLM, SamplingParams

    quant, dense = _compress(tiny_checkpoint("llama", tie=True, tokenizer=True), tmp_path, "int4-g32", [])
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = ["The capital of France is", "def fibonacci(n):"]
    outs = [LLM(model=str(p), dtype="float32", num_blocks=32).generate(prompts, params) for p in (quant, dense)]
    for q, d in zip(*outs, strict=True):
        assert q.outputs[0].token_ids == d.outputs[0].token_ids
