"""The engine process: loads the LLMEngine, says ("ready", EngineInfo), then runs the EngineCore on the
commands of its pipe and sends ("step", items, stats) after every step, ("dead", reason) if the loop
itself fails, ("bye",) after a stop. It ignores SIGINT (the API process decides when it stops) and
exits when the API process goes away (its command pipe closes).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

from neutrino.engine.args import EngineArgs
from neutrino.engine.core import STOP, Command, EngineCore, Item
from neutrino.engine.core_wire import pack, wire_error
from neutrino.engine.request_stream import EngineStats
from neutrino.outputs import RequestOutput

logger = logging.getLogger(__name__)


def main(args: EngineArgs, commands: Connection, outputs: Connection,
         log_setup: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_setup is not None:
        log_setup()
    try:
        from neutrino.engine.llm_engine import LLMEngine

        engine = LLMEngine(args)
    except BaseException as exc:
        outputs.send(("error", *wire_error(exc)))
        return
    outputs.send(("ready", engine.info))
    try:
        EngineCore(engine).run(lambda block: _take(commands, block), lambda i, s: _emit(outputs, i, s))
    except BaseException as exc:
        logger.exception("engine loop stopped")
        _safe_send(outputs, ("dead", f"{type(exc).__name__}: {exc}"))
        return
    _safe_send(outputs, ("bye",))


def _take(commands: Connection, block: bool) -> list[Command]:
    cmds: list[Command] = []
    try:
        if block:
            cmds.append(commands.recv())
        while commands.poll():
            cmds.append(commands.recv())
    except EOFError:  # the API process is gone
        cmds.append(STOP)
    return cmds


def _wire(item: Item) -> tuple[str, object]:
    rid, payload = item
    if isinstance(payload, RequestOutput):
        return rid, pack(payload)
    if isinstance(payload, BaseException):
        return rid, wire_error(payload)
    return rid, None


def _emit(outputs: Connection, items: list[Item], stats: EngineStats) -> None:
    outputs.send(("step", [_wire(i) for i in items], stats))


def _safe_send(outputs: Connection, msg: tuple[object, ...]) -> None:
    try:
        outputs.send(msg)
    except OSError:
        pass
