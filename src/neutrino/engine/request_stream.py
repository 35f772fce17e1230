"""What the engine thread of `AsyncLLM` hands to the asyncio side: one `RequestStream` per request (an
async iterator of its outputs) and `EngineStats` snapshots for /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from neutrino.outputs import RequestOutput


@dataclass
class EngineStats:
    """A snapshot of the engine, taken by the engine thread after each step (for /metrics)."""

    num_running: int = 0
    num_waiting: int = 0  # waiting and preempted sequences
    num_total_blocks: int = 0  # usable KV blocks
    num_free_blocks: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0
    num_preemptions: int = 0
    num_aborted: int = 0  # requests aborted inside the engine (client gone, shutdown)
    num_step_errors: int = 0
    num_unfinished: int = 0  # requests the engine holds


class RequestStream:
    """The outputs of one request, as an async iterator of RequestOutput (cumulative text and token
    ids, plus the step's `delta_*`). `close()` before the end aborts the request in the engine."""

    def __init__(self, request_id: str, prompt_token_ids: list[int], n: int,
                 on_close: Callable[[RequestStream], None]) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.n = n
        self.arrival_time = time.monotonic()
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        self.final: RequestOutput | None = None  # the finished output, once it arrived
        self.error: BaseException | None = None
        self.closed = False
        self._queue: asyncio.Queue[RequestOutput | BaseException | None] = asyncio.Queue()
        self._on_close = on_close

    @property
    def finished(self) -> bool:
        return self.final is not None or self.error is not None

    def _put(self, item: RequestOutput | BaseException) -> None:
        """Called on the event loop thread by the dispatcher."""
        now = time.monotonic()
        if isinstance(item, RequestOutput):
            if item.num_generated_tokens:
                self.first_token_time = self.first_token_time or now
                self.last_token_time = now
            if item.finished:
                self.final = item
        else:
            self.error = item
        self._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        item = await self._queue.get()
        if item is None:  # closed
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        if item.finished:
            self.close()
        return item

    def close(self) -> None:
        """Stop consuming; aborts the request if it has not finished. Idempotent."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)  # wakes a consumer waiting in __anext__
            self._on_close(self)

    def fail(self, error: BaseException) -> None:
        """Abort the request and make its consumer raise `error`."""
        if not self.closed:
            self._queue.put_nowait(error)
            self.close()
