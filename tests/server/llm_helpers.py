"""Helpers shared by the AsyncLLM tests."""

from __future__ import annotations

import asyncio
from typing import Any

from neutrino.engine.async_llm import AsyncLLM


def run(llm: AsyncLLM, coro_fn: Any) -> Any:
    """Start `llm` on a new event loop, await `coro_fn()`, shut it down (a thread core starts again)."""
    async def main() -> Any:
        llm.start()
        try:
            return await coro_fn()
        finally:
            llm.shutdown()

    return asyncio.run(main())
