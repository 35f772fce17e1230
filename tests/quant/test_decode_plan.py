"""The C++ decoder plan (`models/decode_plan.py`) against the Python layers it replaces on decode steps:
the same kernels in the same order, so greedy tokens and their logprobs are equal exactly, for dense and
low-bit weights (integer and exact kernel paths), float32 and bfloat16, and the qkv bias of Qwen2."""

from __future__ import annotations

import logging

import pytest
import torch

from neutrino import LLM, SamplingParams
from neutrino.layers.quant import cpu_kernels
from neutrino.models.decode_plan import PLAN_ENV

PROMPTS = [[3, 4, 5, 6, 7], [9, 10, 11], [20, 21, 22, 23, 24, 25, 26, 27, 28]]


def plan_or_skip() -> None:
    if cpu_kernels.ops() is None or not hasattr(torch.classes.neutrino_cpu, "DecoderPlan"):
        pytest.skip(f"C++ kernels unavailable: {cpu_kernels.last_error}")


def run(llm: LLM, plan: bool) -> list[tuple[list[int], list[float]]]:
    """Greedy continuations of PROMPTS (batch 3, then batch 1) with the plan on or off."""
    model = llm.engine.runner.model
    model.decode_plan.enabled = plan
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2)
    outs = llm.generate(PROMPTS, params) + llm.generate(PROMPTS[:1], params)
    return [(o.outputs[0].token_ids, [lp.logprob for lp in o.outputs[0].logprobs]) for o in outs]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", ["dense", "int4-g32-asym", "int8-sym"])
def test_plan_equals_the_python_layers(quant_pair, tiny_checkpoint, fmt, dtype, monkeypatch) -> None:
    plan_or_skip()
    monkeypatch.setenv("NEUTRINO_QUANT_EXACT", "0")  # the integer path where the CPU has one
    path = tiny_checkpoint("llama", "float32", tokenizer=True) if fmt == "dense" else quant_pair(fmt, tokenizer=True)[0]
    llm = LLM(model=str(path), dtype=dtype, num_blocks=32)
    python = run(llm, False)
    planned = run(llm, True)
    assert llm.engine.runner.model.decode_plan.plan is not None
    assert planned == python


def test_plan_with_qkv_bias_and_the_exact_path(tiny_checkpoint) -> None:
    plan_or_skip()
    llm = LLM(model=str(tiny_checkpoint("qwen2", "float32", tokenizer=True)), dtype="float32", num_blocks=32)
    assert llm.engine.runner.model.layers[0].self_attn.qkv_proj.bias is not None
    python = run(llm, False)
    assert run(llm, True) == python


def test_plan_switch_and_uncovered_models(tiny_checkpoint, monkeypatch, caplog) -> None:
    """`NEUTRINO_DECODE_PLAN=0` keeps the Python layers; QK-norm (Qwen3) has no plan, with the reason
    logged, and decodes as before."""
    plan_or_skip()
    monkeypatch.setenv(PLAN_ENV, "0")
    llm = LLM(model=str(tiny_checkpoint("llama", "float32", tokenizer=True)), dtype="float32", num_blocks=32)
    assert not llm.engine.runner.model.decode_plan.enabled
    monkeypatch.delenv(PLAN_ENV)
    caplog.set_level(logging.DEBUG, logger="neutrino.models.decode_plan")
    qwen3 = LLM(model=str(tiny_checkpoint("qwen3", "float32", tokenizer=True)), dtype="float32", num_blocks=32)
    qwen3.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=4))
    plan = qwen3.engine.runner.model.decode_plan
    assert plan.built and plan.plan is None
    assert "QK-norm" in caplog.text


def test_one_parallel_region_equals_op_by_op(quant_pair, monkeypatch) -> None:
    """The plan's step in one parallel region (threads sharing each linear's rows and the attention's
    (sequence, kv head) units, `run_team`) gives what the op-by-op run gives, bitwise, for batch 3 and 1
    and for a context long enough that the attention merges split parts (> 256 tokens)."""
    plan_or_skip()
    monkeypatch.setenv("NEUTRINO_QUANT_EXACT", "0")
    llm = LLM(model=str(quant_pair("int4-g32-asym", tokenizer=True)[0]), dtype="float32", num_blocks=64,
              enable_prefix_caching=False)  # each run computes the long prompt afresh
    long_prompt = [[(7 * i) % 200 + 3 for i in range(300)]]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=2)
    results = []
    for team in (True, False):
        llm.generate(PROMPTS[:1], SamplingParams(max_tokens=2))  # builds the plan
        llm.engine.runner.model.decode_plan.plan.set_team(team)
        outs = run(llm, True) + [(o.outputs[0].token_ids, [lp.logprob for lp in o.outputs[0].logprobs])
                                 for o in llm.generate(long_prompt, params)]
        results.append(outs)
    assert results[0] == results[1]


def test_an_error_inside_the_parallel_region_is_raised_after_it(quant_pair, monkeypatch) -> None:
    """A bad input found by one thread inside the region (here a KV slot outside the cache) is raised
    as an error naming it once every thread has left the region: no hang, no crash."""
    plan_or_skip()
    llm = LLM(model=str(quant_pair("int4-g32-asym", tokenizer=True)[0]), dtype="float32", num_blocks=32)
    dp = llm.engine.runner.model.decode_plan
    captured: list = []
    original = dp.for_step

    class Recorder:  # the plan, recording the arguments of its runs
        def __init__(self, plan):
            self.plan = plan

        def run(self, *args):
            captured[:] = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            return self.plan.run(*args)

    monkeypatch.setattr(dp, "for_step", lambda *a: None if (p := original(*a)) is None else Recorder(p))
    llm.generate(PROMPTS[:1], SamplingParams(max_tokens=3))
    hidden, positions, caches, slots, tables, lens = captured
    with pytest.raises(RuntimeError, match="slot 1000000000 is outside the KV cache"):
        dp.plan.run(hidden, positions, caches, torch.full_like(slots, 10**9), tables, lens)
    assert llm.generate(PROMPTS[:1], SamplingParams(max_tokens=3))[0].outputs[0].token_ids  # still serves
