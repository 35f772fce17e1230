"""Where the EngineCore runs: `ThreadCore` (a thread of this process) or `ProcessCore` (an engine
process of its own, as in vLLM v1: the API server's HTTP, JSON and tokenizer work then never holds the
GIL the step loop needs).

Both take commands from the event loop thread (`add`, `abort`, `shutdown`) and call `Sink` methods from a
thread of their own; `AsyncLLM` hops those onto the event loop.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from neutrino.engine.args import EngineArgs
from neutrino.engine.core import STOP, Command, EngineCore, Item
from neutrino.engine.core_wire import OutputAccumulator, rebuild_error
from neutrino.engine.limits import EngineInfo
from neutrino.engine.request_stream import EngineStats
from neutrino.errors import EngineUnavailableError
from neutrino.sampling_params import SamplingParams

if TYPE_CHECKING:  # the API process of a ProcessCore never imports torch
    from neutrino.engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """What a core reports to; called from the core's own thread."""

    def on_step(self, items: list[Item], stats: EngineStats) -> None: ...

    def on_dead(self, reason: str) -> None: ...


class ThreadCore:
    """The EngineCore on a daemon thread of this process, fed through a thread-safe queue."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.info = engine.info
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self, sink: Sink) -> None:
        self._thread = threading.Thread(target=self._run, args=(sink,), name="neutrino-engine", daemon=True)
        self._thread.start()

    def _run(self, sink: Sink) -> None:
        try:
            EngineCore(self.engine).run(self._take, sink.on_step)
        except BaseException as exc:  # the loop must never die silently
            logger.exception("engine loop stopped")
            sink.on_dead(f"{type(exc).__name__}: {exc}")

    def _take(self, block: bool) -> list[Command]:
        cmds = [self._commands.get()] if block else []
        while True:
            try:
                cmds.append(self._commands.get_nowait())
            except queue.Empty:
                return cmds

    def add(self, rid: str, token_ids: list[int], params: SamplingParams) -> None:
        self._commands.put(("add", rid, token_ids, params))

    def abort(self, rid: str) -> None:
        self._commands.put(("abort", rid))

    def shutdown(self, timeout: float) -> None:
        if self._thread is not None:
            self._commands.put(STOP)
            self._thread.join(timeout)
            self._thread = None


class ProcessCore:
    """The EngineCore in a spawned engine process; commands and outputs cross two one-way pipes.

    The constructor starts the process and waits until its engine is loaded (raising the error it
    failed with, if any); `start` begins reading its outputs."""

    def __init__(self, args: EngineArgs, log_setup: Callable[[], None] | None = None) -> None:
        from neutrino.engine import core_proc

        ctx = mp.get_context("spawn")  # never fork a process whose torch threads already run
        cmd_recv, self._cmd_send = ctx.Pipe(duplex=False)
        self._out_recv, out_send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=core_proc.main, args=(args, cmd_recv, out_send, log_setup),
                                 name="neutrino-engine-core", daemon=True)
        self._proc.start()
        cmd_recv.close()
        out_send.close()
        self.info: EngineInfo = self._wait_ready()
        self._reader: threading.Thread | None = None
        self._accumulator = OutputAccumulator()
        self._send_lock = threading.Lock()

    def _wait_ready(self) -> EngineInfo:
        try:
            msg = self._out_recv.recv()
        except EOFError:
            self._proc.join(5)
            raise EngineUnavailableError(
                f"the engine process exited while loading (exit code {self._proc.exitcode})") from None
        if msg[0] == "error":
            self._proc.join(5)
            raise rebuild_error(*msg[1:])
        return msg[1]

    @property
    def pid(self) -> int:
        return self._proc.pid or 0

    def start(self, sink: Sink) -> None:
        self._reader = threading.Thread(target=self._read, args=(sink,), name="neutrino-core-reader", daemon=True)
        self._reader.start()

    def _read(self, sink: Sink) -> None:
        while True:
            try:
                msg = self._out_recv.recv()
            except (EOFError, OSError):
                self._proc.join(2)  # reap it, so that its exit code is known
                sink.on_dead(f"the engine process exited (exit code {self._proc.exitcode})")
                return
            if msg[0] == "step":
                sink.on_step([self._accumulator.apply(item) for item in msg[1]], msg[2])
            elif msg[0] == "dead":
                sink.on_dead(msg[1])
                return
            elif msg[0] == "bye":
                return

    def _send(self, cmd: Command) -> None:
        with self._send_lock:
            try:
                self._cmd_send.send(cmd)
            except (BrokenPipeError, OSError):
                pass  # the reader reports the dead process

    def add(self, rid: str, token_ids: list[int], params: SamplingParams) -> None:
        self._send(("add", rid, token_ids, params))

    def abort(self, rid: str) -> None:
        self._send(("abort", rid))

    def shutdown(self, timeout: float) -> None:
        """Stop the engine process (its live requests fail first); kill it if it does not exit."""
        if self._proc.is_alive():
            self._send(STOP)
            self._proc.join(timeout)
        if self._proc.is_alive():
            logger.warning("the engine process did not stop in %.0f s: killing it", timeout)
            self._proc.kill()
            self._proc.join(5)
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        self._cmd_send.close()

