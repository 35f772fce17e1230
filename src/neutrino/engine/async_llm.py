"""AsyncLLM: the asyncio-facing request API over an EngineCore that runs on a thread of this process
or in an engine process of its own (engine/core_client.py).

The asyncio side validates a request synchronously against the engine's `EngineInfo` (so a bad one fails
before anything is queued), tokenizes it with its own tokenizer, and sends `add`/`abort` commands to the
core. Outputs come back to per-request `RequestStream`s through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neutrino.engine.args import EngineArgs
from neutrino.engine.core import Item
from neutrino.engine.core_client import ProcessCore, ThreadCore
from neutrino.engine.request_stream import EngineStats, RequestStream
from neutrino.errors import EngineUnavailableError, InvalidParameterError, QueueFullError
from neutrino.outputs import RequestOutput
from neutrino.sampling_params import SamplingParams

if TYPE_CHECKING:  # with an engine process, this (API) process never imports torch
    from neutrino.engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)

Prompt = str | Sequence[int]


class AsyncLLM:
    """Streams, admission control and validation in front of an engine core.

    `add_request` and `generate` must be called on the event loop thread after `start()`. Built on an
    LLMEngine it runs the core on a thread (restartable: `start` after `shutdown` works); built on a
    ProcessCore (`from_engine_args(..., engine_process=True)`) the core runs in its own process, which
    `shutdown` stops for good."""

    def __init__(self, engine: LLMEngine | ProcessCore, max_queued: int = 256) -> None:
        if isinstance(engine, ProcessCore):
            from neutrino.weights.tokenizer import load_tokenizer

            self._core: ThreadCore | ProcessCore = engine
            self.tokenizer = load_tokenizer(Path(engine.info.tokenizer_path))
        else:
            self._core = ThreadCore(engine)
            # A private tokenizer: HF tokenizers must not be used by two threads at once, and the engine
            # thread detokenizes with the engine's.
            self.tokenizer = copy.deepcopy(engine.tokenizer)
        self.info = self._core.info
        self.max_model_len = self.info.max_model_len
        self.context_limit = self.info.context_limit  # longest prompt + output
        self.vocab_size = self.info.vocab_size
        self.max_queued = max_queued
        self.capacity = self.info.max_num_seqs + max_queued  # sequences running or waiting
        self._streams: dict[str, RequestStream] = {}
        self._num_seqs = 0
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._accepting = True
        self._dead: str | None = None
        self._stats = EngineStats(num_total_blocks=self.info.num_usable_blocks)
        self._finish_listeners: list[Callable[[RequestStream], None]] = []

    @classmethod
    def from_engine_args(cls, args: EngineArgs, max_queued: int = 256, engine_process: bool = False,
                         log_setup: Callable[[], None] | None = None) -> AsyncLLM:
        """Load the engine here (a thread runs it) or, with `engine_process`, in a spawned engine process
        (`log_setup`: a picklable callable that configures its logging)."""
        if engine_process:
            return cls(ProcessCore(args, log_setup), max_queued)
        from neutrino.engine.llm_engine import LLMEngine

        return cls(LLMEngine(args), max_queued)

    @property
    def engine(self) -> LLMEngine:
        """The in-process engine (thread mode only)."""
        if not isinstance(self._core, ThreadCore):
            raise AttributeError("the engine runs in another process")
        return self._core.engine

    @property
    def engine_pid(self) -> int | None:
        """The engine process's pid, or None when the engine runs on a thread here."""
        return self._core.pid if isinstance(self._core, ProcessCore) else None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine core; outputs are delivered to the running event loop."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._started = True
        self._core.start(self)
        where = (f"an engine process (pid {self._core.pid})" if isinstance(self._core, ProcessCore)
                 else "a thread of the API process")
        logger.info("engine core running on %s", where)

    def stop_accepting(self) -> None:
        """New requests get EngineUnavailableError from now on (draining)."""
        self._accepting = False

    def shutdown(self, timeout: float = 10.0) -> None:
        """Abort everything in flight and stop the engine core."""
        self._accepting = False
        if self._started:
            self._core.shutdown(timeout)
            self._started = False
            # after the core's last deliveries: requests queued but never added fail too
            self._call_in_loop(self._fail_streams,
                               EngineUnavailableError("the server shut down before the request finished"))

    @property
    def is_running(self) -> bool:
        return self._started and self._dead is None

    @property
    def num_requests(self) -> int:
        """Requests accepted and not yet closed by their consumer."""
        return len(self._streams)

    def add_finish_listener(self, listener: Callable[[RequestStream], None]) -> None:
        """Call `listener(stream)` on the event loop when a request is closed (finished or not)."""
        self._finish_listeners.append(listener)

    def stats(self) -> EngineStats:
        return replace(self._stats)

    # ---- requests (event loop thread) -------------------------------------------------------------
    def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt string, or the validated ids when given ids."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidParameterError("prompt", "must not be empty")
            ids = list(self.tokenizer(prompt)["input_ids"])
            if not ids:
                raise InvalidParameterError("prompt", f"{prompt!r:.40} has no tokens")
            return ids
        return self.info.check_ids(prompt)

    def prepare(self, prompt: Prompt, params: SamplingParams) -> list[int]:
        """Tokenize and check that the request fits the model; raises InvalidParameterError or
        RequestRejectedError. Queues nothing."""
        return self.info.check(self.tokenize(prompt), params)

    def check_admission(self, num_seqs: int) -> None:
        """Raise unless `num_seqs` more sequences may be queued now."""
        if self._dead is not None:
            raise EngineUnavailableError(f"the engine loop stopped: {self._dead}", retry_after=30.0)
        if not self._accepting:
            raise EngineUnavailableError("the server is shutting down")
        if num_seqs > self.capacity:
            raise InvalidParameterError(
                "n", f"{num_seqs} sequences exceed what this server can ever queue ({self.capacity} = "
                     f"max_num_seqs {self.info.max_num_seqs} + max_queued {self.max_queued})")
        if self._num_seqs + num_seqs > self.capacity:
            raise QueueFullError(
                f"the request queue is full ({self._num_seqs} sequences running or waiting, limit "
                f"{self.capacity}); retry later")

    def add_request(self, prompt: Prompt, params: SamplingParams, request_id: str | None = None) -> RequestStream:
        """Validate, admit and queue a request; returns its stream. Raises before queuing anything."""
        if self._loop is None or not self._started:
            raise EngineUnavailableError("the engine is not started")
        ids = self.prepare(prompt, params)
        self.check_admission(params.n)
        rid = request_id or f"req-{next(self._ids)}"
        if rid in self._streams:
            raise InvalidParameterError("request_id", f"{rid!r} is already in use")
        stream = RequestStream(rid, ids, params.n, self._on_close)
        self._streams[rid] = stream
        self._num_seqs += params.n
        self._core.add(rid, ids, params)
        return stream

    async def generate(self, prompt: Prompt, params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs until it finishes; stopping early aborts it."""
        stream = self.add_request(prompt, params, request_id)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    def abort(self, request_id: str) -> None:
        """Abort a request by id (no-op when unknown or finished)."""
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.close()

    def abort_all(self, reason: str = "the server is shutting down") -> None:
        """Abort every request; their consumers get EngineUnavailableError(reason)."""
        for stream in list(self._streams.values()):
            stream.fail(EngineUnavailableError(f"request aborted: {reason}"))

    def _on_close(self, stream: RequestStream) -> None:
        if self._streams.pop(stream.request_id, None) is None:
            return
        self._num_seqs -= stream.n
        if not stream.finished:
            self._core.abort(stream.request_id)
        for listener in self._finish_listeners:
            try:
                listener(stream)
            except Exception:
                logger.exception("finish listener failed")

    # ---- the core's callbacks (its thread) ---------------------------------------------------------
    def on_step(self, items: list[Item], stats: EngineStats) -> None:
        self._stats = stats  # before delivery: a client that saw its tokens sees the stats after them
        if items:
            self._call_in_loop(self._dispatch, items)

    def on_dead(self, reason: str) -> None:
        self._dead = reason
        error = EngineUnavailableError(f"the engine loop stopped: {reason}", retry_after=30.0)
        self._call_in_loop(self._fail_streams, error)  # also requests queued but never added

    # ---- event loop side of delivery -----------------------------------------------------------------
    def _dispatch(self, items: list[Item]) -> None:
        for rid, item in items:
            stream = self._streams.get(rid)
            if stream is not None and item is not None:
                stream._put(item)

    def _fail_streams(self, error: BaseException) -> None:
        for stream in list(self._streams.values()):
            if not stream.finished:
                stream._put(error)

    def _call_in_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass
