"""AsyncLLM: an LLMEngine driven by one background thread, for asyncio servers.

The engine is touched only by its thread: the asyncio side validates a request synchronously (so a bad
one fails before anything is queued), then sends `add`/`abort` commands through a thread-safe queue
that the thread drains before every step. Outputs go back to per-request `RequestStream`s with
`loop.call_soon_threadsafe`. Torch releases the GIL inside its kernels, so the event loop keeps
serving while a step runs.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from neutrino.engine.args import EngineArgs
from neutrino.engine.llm_engine import LLMEngine
from neutrino.engine.request_stream import EngineStats, RequestStream
from neutrino.errors import (
    EngineStepError,
    EngineUnavailableError,
    InvalidParameterError,
    QueueFullError,
)
from neutrino.outputs import RequestOutput
from neutrino.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

Prompt = str | Sequence[int]
_STOP = ("stop",)


class AsyncLLM:
    """Owns an LLMEngine and the thread that runs its step loop; the asyncio-facing request API.

    `add_request` and `generate` must be called on the event loop thread after `start()`."""

    def __init__(self, engine: LLMEngine, max_queued: int = 256) -> None:
        self.engine = engine
        # A private tokenizer: HF tokenizers must not be used by two threads at once, and the engine
        # thread detokenizes with the engine's.
        self.tokenizer = copy.deepcopy(engine.tokenizer)
        self.max_model_len = engine.max_model_len
        kv = engine.scheduler.kv_cache_manager  # the last token is never cached, hence + 1
        self.context_limit = min(self.max_model_len, kv.capacity_tokens + 1)  # longest prompt + output
        self.vocab_size = engine.model_config.vocab_size
        self.max_queued = max_queued
        self.capacity = engine.args.max_num_seqs + max_queued  # sequences running or waiting
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}
        self._num_seqs = 0
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._dead: str | None = None
        self._live: set[str] = set()  # engine thread only: requests added and not finished
        self._counters = {"aborted": 0, "step_errors": 0}
        self._stats = EngineStats()
        self._finish_listeners: list[Callable[[RequestStream], None]] = []

    @classmethod
    def from_engine_args(cls, args: EngineArgs, max_queued: int = 256) -> AsyncLLM:
        return cls(LLMEngine(args), max_queued)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread; outputs are delivered to the running event loop."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._publish_stats()
        self._thread = threading.Thread(target=self._run, name="neutrino-engine", daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """New requests get EngineUnavailableError from now on (draining)."""
        self._accepting = False

    def shutdown(self, timeout: float = 10.0) -> None:
        """Abort everything in flight and stop the engine thread."""
        self._accepting = False
        if self._thread is not None:
            self._commands.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._dead is None

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
        return self.engine.tokenize(prompt)  # ids only: does not touch the engine's tokenizer

    def prepare(self, prompt: Prompt, params: SamplingParams) -> list[int]:
        """Tokenize and check that the request fits the model; raises InvalidParameterError or
        RequestRejectedError. Queues nothing."""
        return self.engine.validate_request(self.tokenize(prompt), params)

    def check_admission(self, num_seqs: int) -> None:
        """Raise unless `num_seqs` more sequences may be queued now."""
        if self._dead is not None:
            raise EngineUnavailableError(f"the engine loop stopped: {self._dead}", retry_after=30.0)
        if not self._accepting:
            raise EngineUnavailableError("the server is shutting down")
        if num_seqs > self.capacity:
            raise InvalidParameterError(
                "n", f"{num_seqs} sequences exceed what this server can ever queue ({self.capacity} = "
                     f"max_num_seqs {self.engine.args.max_num_seqs} + max_queued {self.max_queued})")
        if self._num_seqs + num_seqs > self.capacity:
            raise QueueFullError(
                f"the request queue is full ({self._num_seqs} sequences running or waiting, limit "
                f"{self.capacity}); retry later")

    def add_request(self, prompt: Prompt, params: SamplingParams, request_id: str | None = None) -> RequestStream:
        """Validate, admit and queue a request; returns its stream. Raises before queuing anything."""
        if self._loop is None:
            raise EngineUnavailableError("the engine is not started")
        ids = self.prepare(prompt, params)
        self.check_admission(params.n)
        rid = request_id or f"req-{next(self._ids)}"
        if rid in self._streams:
            raise InvalidParameterError("request_id", f"{rid!r} is already in use")
        stream = RequestStream(rid, ids, params.n, self._on_close)
        self._streams[rid] = stream
        self._num_seqs += params.n
        self._commands.put(("add", rid, ids, params))
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
            self._commands.put(("abort", stream.request_id))
        for listener in self._finish_listeners:
            try:
                listener(stream)
            except Exception:
                logger.exception("finish listener failed")

    def _dispatch(self, items: list[tuple[str, RequestOutput | BaseException]]) -> None:
        """Event loop side of delivery."""
        for rid, item in items:
            stream = self._streams.get(rid)
            if stream is not None:
                stream._put(item)

    def _fail_streams(self, error: BaseException) -> None:
        for stream in list(self._streams.values()):
            if not stream.finished:
                stream._put(error)

    # ---- the engine thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._run_once():
                pass
        except BaseException as exc:  # the loop must never die silently
            logger.exception("engine loop stopped")
            self._dead = f"{type(exc).__name__}: {exc}"
            error = EngineUnavailableError(f"the engine loop stopped: {self._dead}", retry_after=30.0)
        else:
            error = EngineUnavailableError("the server shut down before the request finished")
        self._fail_live(error)
        self._publish_stats()
        self._call_in_loop(self._fail_streams, error)  # also requests queued but never added

    def _run_once(self) -> bool:
        for cmd in self._take_commands(block=not self._live):
            if cmd is _STOP:
                return False
            if cmd[0] == "add":
                self._apply_add(*cmd[1:])
            else:
                self._apply_abort(cmd[1])
        if self._live:
            self._step()
        else:
            self._publish_stats()
        return True

    def _take_commands(self, block: bool) -> list[tuple[Any, ...]]:
        cmds = [self._commands.get()] if block else []
        while True:
            try:
                cmds.append(self._commands.get_nowait())
            except queue.Empty:
                return cmds

    def _apply_add(self, rid: str, token_ids: list[int], params: SamplingParams) -> None:
        try:
            self.engine.add_request(rid, token_ids, params)
        except Exception as exc:  # validated before queuing, so this is unexpected
            logger.warning("request %s rejected by the engine: %s", rid, exc)
            self._deliver([(rid, exc)])
            return
        self._live.add(rid)

    def _apply_abort(self, rid: str) -> None:
        if rid in self._live:
            self.engine.abort_request(rid)
            self._live.discard(rid)
            self._counters["aborted"] += 1

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            self._counters["step_errors"] += 1
            logger.exception("engine step failed; failing %d requests in flight", len(self._live),
                             extra={"failed_request_ids": ",".join(sorted(self._live))})
            self._fail_live(EngineStepError(f"the engine failed while running this request: "
                                            f"{type(exc).__name__}: {exc}"))
            return
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        self._publish_stats()  # before delivery: a client that saw its tokens sees the stats after them
        self._deliver([(out.request_id, out) for out in outputs])

    def _fail_live(self, error: BaseException) -> None:
        ids = list(self._live)
        self._live.clear()
        try:
            self.engine.abort_request(ids)
        except Exception:
            logger.exception("aborting failed requests raised too")
        self._deliver([(rid, error) for rid in ids])

    def _deliver(self, items: list[tuple[str, RequestOutput | BaseException]]) -> None:
        if items:
            self._call_in_loop(self._dispatch, items)

    def _call_in_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def _publish_stats(self) -> None:
        s = self.engine.scheduler.stats()
        kv = self.engine.scheduler.kv_cache_manager
        self._stats = EngineStats(
            num_running=s["num_running"], num_waiting=s["num_waiting"],
            num_total_blocks=kv.num_usable_blocks, num_free_blocks=s["num_free_blocks"],
            kv_cache_usage=s["kv_cache_usage"], prefix_cache_queries=s["prefix_cache_queries"],
            prefix_cache_hits=s["prefix_cache_hits"], num_preemptions=s["num_preemptions"],
            num_aborted=self._counters["aborted"], num_step_errors=self._counters["step_errors"],
            num_unfinished=self.engine.get_num_unfinished_requests(),
        )
