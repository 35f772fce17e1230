"""Quantized checkpoints in the engine: every format on a tiny model against the same model with the
dequantized weights written as a dense checkpoint, greedy generation, tied heads, and memory.

Tolerances (max |logits_quant - logits_dense|, tiny models with |logits| up to ~7; measured on an
AVX-512 CPU in brackets):
- weight-only, float32: <= 1e-4 [<= 1.2e-5; the prefill path dequantizes exactly, decode-sized batches
  differ by fp32 summation order only];
- weight-only, bfloat16: <= 8e-2 * max |logits| [<= 5 %] (bf16 activations; fp16-rounded scales), and
  the mean error against the float32 dense model at most 1.5x the dense bf16 model's;
- W8A8 (activations quantized per token to int8 at run time, which the dense twin does not do):
  <= 0.15 * max |logits| [<= 8 %] and the same argmax at >= 80 % of positions.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from quant_helpers import FORMATS, load_runner
from safetensors.torch import load_file

from neutrino import LLM, SamplingParams
from neutrino.layers.linear import Linear
from neutrino.layers.quant import blocked
from neutrino.layers.quant.base import UnquantizedLinearMethod

IDS = list(range(3, 43))
WEIGHT_ONLY = [f for f in FORMATS if f != "w8a8"]


def logits(path, dtype=torch.float32, ids=IDS) -> torch.Tensor:
    return load_runner(path, dtype).score(ids)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_llama_logits_match_dequantized_dense(quant_pair, fmt: str) -> None:
    quant, dense = quant_pair(fmt)
    runner = load_runner(quant)
    methods = {type(m.quant_method).__name__ for m in runner.model.modules() if isinstance(m, Linear)}
    assert len(methods) == 2  # the quantized layers' method and the dense (ignored) lm_head
    for ids in (IDS, IDS[:3]):  # prefill-sized batch (dequantize + GEMM) and decode-sized (kernel)
        ours, ref = runner.score(ids), logits(dense, ids=ids)
        diff = float((ours - ref).abs().max())
        if fmt == "w8a8":
            assert diff <= 0.15 * float(ref.abs().max())
            assert float((ours.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.8
        else:
            assert diff <= 1e-4, f"{fmt}: max diff {diff:.3e}"


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
@pytest.mark.parametrize("fmt", ["int8-asym", "int4-g32-asym"])
def test_other_families(quant_pair, family: str, fmt: str) -> None:
    """GPT-2 (Conv1D weights, biases, fused c_attn) and Qwen2 (q/k/v biases)."""
    quant, dense = quant_pair(fmt, family)
    assert float((logits(quant) - logits(dense)).abs().max()) <= 1e-4


@pytest.mark.parametrize("fmt", ["int8-asym", "int4-g32-sym"])
def test_bfloat16_engine(quant_pair, fmt: str) -> None:
    quant, dense = quant_pair(fmt)
    ours, ref_bf16, truth = logits(quant, torch.bfloat16), logits(dense, torch.bfloat16), logits(dense)
    assert float((ours - ref_bf16).abs().max()) <= 8e-2 * float(truth.abs().max())
    # These prompts are short enough for the integer (VNNI) path where the CPU has it, which also rounds
    # the activations to int8 per 32-column block (blocked.py): the bound is that of tests/quant/test_quant_vnni.py.
    bound = 2.5 if blocked.INTEGER_PATH_MAX_TOKENS >= len(IDS) else 1.5
    assert float((ours - truth).abs().mean()) <= bound * float((ref_bf16 - truth).abs().mean())


def test_quantized_lm_head(quant_pair) -> None:
    quant, dense = quant_pair("int4-g32-asym", quantize_head=True)
    runner = load_runner(quant)
    assert not isinstance(runner.model.lm_head.quant_method, UnquantizedLinearMethod)
    assert float((runner.score(IDS) - logits(dense)).abs().max()) <= 1e-4


def test_tied_head_without_quantized_tensors_stays_dense(quant_pair, tmp_path) -> None:
    """A tied checkpoint whose config would quantize lm_head but stores no `lm_head.qweight`: the head is
    the (dense) embedding table."""
    quant, dense = quant_pair("int8-sym", tie=True)
    shutil.copytree(quant, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] and "lm_head.qweight" not in load_file(str(quant / "model.safetensors"))
    cfg["quantization_config"]["ignore"] = []
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    runner = load_runner(tmp_path / "m")
    assert isinstance(runner.model.lm_head.quant_method, UnquantizedLinearMethod)
    assert float((runner.score(IDS) - logits(dense)).abs().max()) <= 1e-4


@pytest.mark.parametrize("fmt", ["int8-sym", "int4-g32-asym", "w8a8"])
def test_greedy_generation_matches_dense(quant_pair, fmt: str) -> None:
    """Through `LLM`: chunked prefill, paged KV cache, batched decode; same greedy tokens as the dense
    twin (float32), and the sampled tokens' logprobs agree."""
    quant, dense = quant_pair(fmt, tokenizer=True)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)
    prompts = ["The capital of France is", "def fibonacci(n):"]
    outs = [LLM(model=str(p), dtype="float32", num_blocks=32).generate(prompts, params) for p in (quant, dense)]
    for q, d in zip(*outs, strict=True):
        if fmt == "w8a8":
            assert len(q.outputs[0].token_ids) == 12
            continue
        assert q.outputs[0].token_ids == d.outputs[0].token_ids
        assert abs(q.outputs[0].cumulative_logprob - d.outputs[0].cumulative_logprob) <= 1e-3


def test_memory_of_quantized_linears(quant_pair) -> None:
    """bf16 engine: int4 g32 asymmetric layers hold N*K/2 code bytes plus fp16 scales and offsets per
    group of 32 (0.625 bytes per weight); no dense copy; the dense lm_head is unchanged."""
    quant, _ = quant_pair("int4-g32-asym")
    model = load_runner(quant, torch.bfloat16).model
    for module in model.modules():
        if not isinstance(module, Linear) or isinstance(module.quant_method, UnquantizedLinearMethod):
            continue
        n, k = module.out_features, module.in_features
        tensors = [t for t in vars(module).values() if isinstance(t, torch.Tensor)] + list(module.parameters())
        held = sum(t.numel() * t.element_size() for t in tensors)
        assert held == n * k // 2 + 2 * n * (k // 32) * 2, module.prefix
        assert not any(t.is_floating_point() and t.numel() >= n * k for t in tensors)
