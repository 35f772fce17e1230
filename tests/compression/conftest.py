"""Fixtures for the evaluation tests: a tiny random Llama served by the engine (SmolLM2's tokenizer),
and the real SmolLM2-135M-Instruct built the way `neutrino eval` builds it (bfloat16)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_llm(tiny_checkpoint) -> Any:
    """An LLM over a tiny random Llama (hidden 64, 2 layers, vocab 49152), float32."""
    from neutrino.compression.evaluate.api import build_eval_llm

    return build_eval_llm(str(tiny_checkpoint("llama", tokenizer=True)), dtype="float32")


@pytest.fixture(scope="session")
def smollm2_llm(smollm2_dir) -> Any:
    """SmolLM2 as `neutrino eval` loads it by default (bfloat16, prefix caching off)."""
    from neutrino.compression.evaluate.api import build_eval_llm

    return build_eval_llm(str(smollm2_dir))
