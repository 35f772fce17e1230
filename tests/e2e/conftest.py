"""Fixtures for end-to-end tests on the real embedded SmolLM2-135M-Instruct.

The model is loaded once per session (`LLM(dtype="float32")`); every test that uses `llm`
checks afterwards that the engine is idle and every KV block is back in the free queue, so a
test that leaks a request or a block fails even if its own assertions passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import KV_CACHE_MEMORY, MATH_CHAT, Greedy, assert_engine_idle

from neutrino.outputs import CompletionOutput
from neutrino.sampling_params import SamplingParams


@pytest.fixture(scope="session")
def session_llm() -> Any:
    from neutrino import LLM

    return LLM(dtype="float32", kv_cache_memory=KV_CACHE_MEMORY)


@pytest.fixture
def llm(session_llm: Any) -> Iterator[Any]:
    """The shared LLM; the test fails if it leaves requests or KV blocks behind."""
    assert_engine_idle(session_llm)
    yield session_llm
    assert_engine_idle(session_llm)


@pytest.fixture(scope="session")
def greedy(session_llm: Any) -> Greedy:
    """`greedy(prompt, max_tokens)`: the memoized greedy completion of a prompt run alone."""
    cache: dict[tuple[Any, int], CompletionOutput] = {}

    def run(prompt: str | list[int], max_tokens: int) -> CompletionOutput:
        key = (prompt if isinstance(prompt, str) else tuple(prompt), max_tokens)
        if key not in cache:
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
            cache[key] = session_llm.generate(prompt, params)[0].outputs[0]
        return cache[key]

    return run


@pytest.fixture(scope="session")
def math_chat_ids(session_llm: Any) -> list[int]:
    """Token ids of MATH_CHAT rendered by the tokenizer's own chat template."""
    ids = session_llm.tokenizer.apply_chat_template(MATH_CHAT, add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):
        ids = ids["input_ids"]
    return list(ids)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A hung generation loop fails its test instead of stalling the suite."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))
