"""The same engine on CUDA: greedy outputs and logits match the CPU run. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from neutrino import LLM, SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PROMPTS = ["The capital of France is", "def fibonacci(n):", "List three colours:"]


def test_cuda_greedy_matches_cpu_fp32():
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    cpu = LLM(dtype="float32", device="cpu").generate(PROMPTS, params)
    gpu_llm = LLM(dtype="float32", device="cuda")
    assert gpu_llm.engine.runner.kv_caches[0].device.type == "cuda"
    gpu = gpu_llm.generate(PROMPTS, params)
    assert [o.outputs[0].token_ids for o in gpu] == [o.outputs[0].token_ids for o in cpu]


def test_cuda_bf16_logits_close_to_cpu_fp32():
    ids = list(range(100, 140))
    ref = LLM(dtype="float32", device="cpu").engine.runner.score(ids)
    got = LLM(dtype="bfloat16", device="cuda").engine.runner.score(ids).cpu()
    assert (got[-1] - ref[-1]).abs().max().item() < 0.5
    assert got[-1].argmax() == ref[-1].argmax()
