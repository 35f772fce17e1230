"""Shared constants and checks for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neutrino.outputs import CompletionOutput

KV_CACHE_MEMORY = 256 * 1024**2  # plenty for these tests; keeps the CPU allocation small

FRANCE = "The capital of France is"
STORY = "Once upon a time"
MATH_CHAT = [{"role": "user", "content": "What is 2+2? Answer with just the number."}]

Greedy = Callable[..., CompletionOutput]


def assert_engine_idle(llm: Any) -> None:
    """No request left in the engine and every usable KV block free."""
    engine = llm.engine
    assert not engine.has_unfinished_requests()
    assert engine.get_num_unfinished_requests() == 0
    kv = engine.scheduler.kv_cache_manager
    assert kv.num_free_blocks == kv.num_usable_blocks, (
        f"{kv.num_usable_blocks - kv.num_free_blocks} KV blocks still held"
    )
