"""Greedy generation parity on SmolLM2-135M-Instruct (float32): Neutrino, all prompts in one batched
`generate` call, produces exactly the token ids of transformers' `generate(do_sample=False)` run on each
prompt alone, for plain completions and chat-templated prompts (short and long, code, lists, numbers,
non-English). Both stop at EOS (token 2, included in the output) or after MAX_NEW_TOKENS.

A divergence is accepted only as a near-tie: transformers' logits of the two competing tokens at the
first differing position closer than NEAR_TIE (see conftest), reported as a warning; the suite currently
sees none.
"""

from __future__ import annotations

import pytest
import torch

from neutrino.sampling_params import SamplingParams

MAX_NEW_TOKENS = 24

PLAIN_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "import numpy as np\n\n# compute the mean and standard deviation of an array\nx = np.array([1, 2, 3, 4])\n",
    "SELECT name, email FROM users WHERE",
    "Here is a list of fruits:\n1. Apple\n2.",
    "1, 2, 3, 5, 8, 13, 21,",
    "The square root of 144 is",
    "La capitale de l'Allemagne est",
    "Der schnellste Weg von München nach Hamburg ist",
    "El agua hierve a cien grados cuando",
    "日本の首都は",
]

CHAT_CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of Japan?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "List three primary colors."}],
    [{"role": "user", "content": "What is 12 times 7?"}],
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "user", "content": "Traduis en anglais : « Le chat dort sur le canapé. »"}],
    [
        {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "Hi! Can you recommend a book?"},
        {"role": "assistant", "content": "Sure. Do you prefer fiction or non-fiction?"},
        {"role": "user", "content": "Fiction, something about the sea."},
    ],
]


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer, passage_ids) -> list[list[int]]:
    """Token ids of every prompt (plain ones tokenized as the engine does; chat ones templated), plus two
    long ones: a 250-token passage slice and a chat question about a ~200-token document."""
    tok = smollm2_tokenizer
    plain = [list(tok(p)["input_ids"]) for p in PLAIN_PROMPTS]
    document = tok.decode(passage_ids[:200])
    conversations = [
        *CHAT_CONVERSATIONS,
        [{"role": "user", "content": f"{document}\n\nWhen was the harbour built?"}],
    ]
    chat = []
    for conv in conversations:
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
        chat.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return [*plain, passage_ids[300:550], *chat]


@torch.inference_mode()
def hf_greedy(model, ids: list[int]) -> list[int]:
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    return out[0, len(ids) :].tolist()


def test_greedy_generate_matches_transformers(smollm2_llm, smollm2_hf, prompts, greedy_equal) -> None:
    assert len(prompts) >= 20 and max(len(p) for p in prompts) >= 200
    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS)
    outputs = smollm2_llm.generate(prompts, params)  # one batched call
    ours = [o.outputs[0].token_ids for o in outputs]
    refs = [hf_greedy(smollm2_hf, ids) for ids in prompts]
    assert any(r[-1] == 2 and len(r) < MAX_NEW_TOKENS for r in refs), "no prompt exercised the EOS stop"

    @torch.inference_mode()
    def next_logits(i: int, prefix: list[int]) -> torch.Tensor:
        return smollm2_hf(torch.tensor([prompts[i] + prefix])).logits[0, -1]

    greedy_equal("generate", refs, ours, next_logits)
    for out, ref in zip(outputs, refs, strict=True):
        assert out.outputs[0].finish_reason == ("stop" if ref[-1] == 2 else "length")
    kv = smollm2_llm.engine.scheduler.kv_cache_manager
    assert kv.num_free_blocks == kv.num_usable_blocks
