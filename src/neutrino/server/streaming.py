"""Running requests for a route: starting them all-or-nothing, merging their outputs, Server-Sent
Events, and aborting on client disconnect (streaming or not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from neutrino.engine.async_llm import AsyncLLM
from neutrino.engine.request_stream import RequestStream
from neutrino.outputs import RequestOutput
from neutrino.sampling_params import SamplingParams

T = TypeVar("T")


def start_streams(llm: AsyncLLM, prompts: Sequence[str | list[int]], params: SamplingParams,
                  base_id: str) -> list[RequestStream]:
    """Validate every prompt, check admission for all of them, then queue them: one bad prompt queues
    nothing."""
    token_ids = [llm.prepare(p, params) for p in prompts]
    llm.check_admission(params.n * len(prompts))
    streams: list[RequestStream] = []
    try:
        for i, ids in enumerate(token_ids):
            rid = base_id if len(prompts) == 1 else f"{base_id}-{i}"
            streams.append(llm.add_request(ids, params, rid))
    except BaseException:
        close_all(streams)
        raise
    return streams


def close_all(streams: Sequence[RequestStream]) -> None:
    for stream in streams:
        stream.close()


async def collect(streams: Sequence[RequestStream]) -> list[RequestOutput]:
    """The final output of every stream (they run concurrently in the engine)."""
    try:
        finals = []
        for stream in streams:
            last = None
            async for out in stream:
                last = out
            assert last is not None and last.finished, "a request stream ended without its final output"
            finals.append(last)
        return finals
    finally:
        close_all(streams)


async def merge(streams: Sequence[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(stream index, output) in arrival order across streams; closing it closes every stream."""
    if len(streams) == 1:
        try:
            async for out in streams[0]:
                yield 0, out
        finally:
            close_all(streams)
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for out in stream:
                queue.put_nowait((index, out))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        close_all(streams)


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class SSEResponse(Response):
    """`text/event-stream` from an async iterator of bytes. The client's disconnect cancels the
    iterator at once (even while no token is being sent), and `on_close` always runs."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None],
                 headers: dict[str, str] | None = None) -> None:
        self.events = events
        self.on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self._stream(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watch):
                task.cancel()
            with contextlib.suppress(BaseException):
                await stream
            with contextlib.suppress(BaseException):
                await self.events.aclose()  # type: ignore[attr-defined]
            self.on_close()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work` until it finishes or the client disconnects (then cancel it and return None), like
    vLLM's `with_cancellation`. Call it only after the body has been read."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()  # the client is gone: stop the work (which aborts its requests); nothing to answer
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
