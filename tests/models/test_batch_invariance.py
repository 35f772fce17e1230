"""Batch invariance of greedy decoding on SmolLM2 (float32): a request's tokens must not depend on what
it is batched with or on how the engine schedules it.

Reference: each of 32 real-text prompts (5 to 300 tokens) run alone, prefix caching off. The same token
ids are required (a) with all 32 in one batch, (b) with chunked prefill forced by a 64-token step
budget, (c) under forced preemption with a KV cache that holds only about two of the longest
requests, and (d) with prefix-cache hits on prompts sharing a 100-token preamble (first and second
round). After every scenario each KV block must be back in the free pool.

Different batch compositions change matmul shapes, so float32 logits may differ in the last bits; a
divergence is accepted only as a near-tie (the reference logits of the two tokens closer than NEAR_TIE,
see conftest), and is reported as a warning.
"""

from __future__ import annotations

import pytest

from neutrino import LLM
from neutrino.sampling_params import SamplingParams

NUM_PROMPTS = 32
MAX_TOKENS = 16
BLOCK_SIZE = 16
CHUNK_BUDGET = 64  # max_num_batched_tokens for the chunked-prefill scenario
PREAMBLE_LEN = 100
QUESTIONS = [
    "When was the harbour built?",
    "Who was Edvard Lindqvist?",
    "How many boats did the fleet have in 1900?",
    "What happened on 14 October 1903?",
    "Why is the station inland?",
    "Summarise the passage in one sentence.",
    "List three facts about Valmere.",
    "Traduisez la première phrase en français.",
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)


def run_alone(llm: LLM, prompts: list[list[int]]) -> list[list[int]]:
    """Token ids of each prompt generated in its own engine call."""
    return [llm.generate([p], GREEDY)[0].outputs[0].token_ids for p in prompts]


def assert_all_blocks_free(llm: LLM) -> None:
    kv = llm.engine.scheduler.kv_cache_manager
    assert kv.num_free_blocks == kv.num_usable_blocks, (kv.num_free_blocks, kv.num_usable_blocks)
    assert not llm.engine.has_unfinished_requests()


def blocks_for(num_tokens: int) -> int:
    return -(-num_tokens // BLOCK_SIZE)


@pytest.fixture(scope="module")
def prompts(text_prompts) -> list[list[int]]:
    ps = text_prompts(NUM_PROMPTS, 5, 300, seed=0)
    assert min(map(len, ps)) <= 20 and max(map(len, ps)) >= 250
    return ps


@pytest.fixture(scope="module")
def reference(smollm2_llm, prompts) -> list[list[int]]:
    refs = run_alone(smollm2_llm, prompts)
    assert all(len(r) == MAX_TOKENS for r in refs)
    assert_all_blocks_free(smollm2_llm)
    return refs


@pytest.fixture(scope="module")
def check(smollm2_llm, greedy_equal):
    """`check(label, prompts, refs, outputs)`: greedy equality, near-ties judged by the reference engine."""
    runner = smollm2_llm.engine.runner

    def run(label: str, prompts: list[list[int]], refs: list[list[int]], outputs) -> None:
        outs = [o.outputs[0].token_ids for o in outputs]
        greedy_equal(label, refs, outs, lambda i, prefix: runner.score(prompts[i] + prefix)[-1])

    return run


def test_one_batch(smollm2_llm, prompts, reference, check) -> None:
    before = smollm2_llm.engine.scheduler.stats()["num_preemptions"]
    outputs = smollm2_llm.generate(prompts, GREEDY)
    check("one batch", prompts, reference, outputs)
    assert smollm2_llm.engine.scheduler.stats()["num_preemptions"] == before
    assert_all_blocks_free(smollm2_llm)


def test_chunked_prefill(smollm2_dir, prompts, reference, check) -> None:
    llm = LLM(
        model=str(smollm2_dir),
        dtype="float32",
        enable_prefix_caching=False,
        block_size=BLOCK_SIZE,
        num_blocks=1 + sum(blocks_for(len(p) + MAX_TOKENS) for p in prompts),
        max_num_batched_tokens=CHUNK_BUDGET,
        max_num_seqs=NUM_PROMPTS,
    )
    assert max(map(len, prompts)) > 4 * CHUNK_BUDGET  # long prompts take several chunks
    outputs = llm.generate(prompts, GREEDY)
    check("chunked prefill", prompts, reference, outputs)
    assert llm.engine.scheduler.stats()["num_preemptions"] == 0
    assert_all_blocks_free(llm)


def test_preemption(smollm2_dir, prompts, reference, check) -> None:
    longest = max(blocks_for(len(p) + MAX_TOKENS) for p in prompts)
    llm = LLM(
        model=str(smollm2_dir),
        dtype="float32",
        enable_prefix_caching=False,
        block_size=BLOCK_SIZE,
        num_blocks=1 + 2 * longest,
        max_num_seqs=NUM_PROMPTS,
    )
    outputs = llm.generate(prompts, GREEDY)
    stats = llm.engine.scheduler.stats()
    assert stats["num_preemptions"] > 0, stats
    check("preemption", prompts, reference, outputs)
    assert_all_blocks_free(llm)


def test_prefix_cache_hits(smollm2_dir, smollm2_llm, passage_ids, smollm2_tokenizer, check) -> None:
    preamble = passage_ids[:PREAMBLE_LEN]
    prompts = [
        preamble + list(smollm2_tokenizer(f"\nQuestion: {q}\nAnswer:", add_special_tokens=False)["input_ids"])
        for q in QUESTIONS
    ]
    refs = run_alone(smollm2_llm, prompts)  # prefix caching is off in the shared engine
    llm = LLM(
        model=str(smollm2_dir),
        dtype="float32",
        enable_prefix_caching=True,
        block_size=BLOCK_SIZE,
        num_blocks=256,
        max_num_seqs=NUM_PROMPTS,
    )
    for round_ in (1, 2):
        outputs = llm.generate(prompts, GREEDY)
        check(f"prefix cache round {round_}", prompts, refs, outputs)
        assert_all_blocks_free(llm)
    # second round: every full block of each prompt (but the one holding its last token) is a hit
    cached = [o.num_cached_tokens for o in outputs]
    assert all(c == (len(p) - 1) // BLOCK_SIZE * BLOCK_SIZE for c, p in zip(cached, prompts, strict=True)), (
        cached
    )
    assert min(cached) >= PREAMBLE_LEN // BLOCK_SIZE * BLOCK_SIZE
    stats = llm.engine.scheduler.stats()
    assert stats["prefix_cache_hits"] > 0 and stats["num_preemptions"] == 0, stats
