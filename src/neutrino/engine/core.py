"""EngineCore: the busy loop around an LLMEngine, independent of where it runs.

It applies `add`/`abort`/`stop` commands, steps while requests are live, and hands every step's outputs
and an `EngineStats` snapshot to `emit`. `ThreadCore` runs it on a thread of the API process,
`ProcessCore` in an engine process of its own (engine/core_client.py). A failing step fails the requests
in flight, never the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from neutrino.engine.request_stream import EngineStats
from neutrino.errors import EngineStepError, EngineUnavailableError
from neutrino.outputs import RequestOutput
from neutrino.sampling_params import SamplingParams

if TYPE_CHECKING:  # the API process of a ProcessCore never imports torch
    from neutrino.engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)

# (request id, an output, the error that ended it, or None: "aborted, forget it")
Item = tuple[str, RequestOutput | BaseException | None]
Command = tuple[Any, ...]  # ("add", rid, token_ids, params) | ("abort", rid) | ("stop",)
Emit = Callable[[list[Item], EngineStats], None]
STOP: Command = ("stop",)


class EngineCore:
    """Drives one LLMEngine; call `run(take, emit)` on the thread that owns it."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._live: set[str] = set()  # requests added and not finished
        self._counters = {"aborted": 0, "step_errors": 0}

    def run(self, take: Callable[[bool], list[Command]], emit: Emit) -> None:
        """Loop until a stop command; `take(block)` returns the commands queued (waiting for one when
        `block`). Requests still live at the end get an EngineUnavailableError. Raises what the loop
        itself raised (after failing the live requests)."""
        error = EngineUnavailableError("the server shut down before the request finished")
        emit([], self.stats())
        try:
            while self._run_once(take, emit):
                pass
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"
            error = EngineUnavailableError(f"the engine loop stopped: {reason}", retry_after=30.0)
            raise
        finally:
            emit(self._fail_live(error), self.stats())

    def _run_once(self, take: Callable[[bool], list[Command]], emit: Emit) -> bool:
        items: list[Item] = []
        for cmd in take(not self._live):
            if cmd[0] == "stop":
                if items:
                    emit(items, self.stats())
                return False
            if cmd[0] == "add":
                items += self._add(cmd[1], cmd[2], cmd[3])
            else:
                items += self._abort(cmd[1])
        if self._live:
            items += self._step()
        emit(items, self.stats())
        return True

    def _add(self, rid: str, token_ids: list[int], params: SamplingParams) -> list[Item]:
        try:
            self.engine.add_request(rid, token_ids, params)
        except Exception as exc:  # validated before queuing, so this is unexpected
            logger.warning("request %s rejected by the engine: %s", rid, exc)
            return [(rid, exc)]
        self._live.add(rid)
        return []

    def _abort(self, rid: str) -> list[Item]:
        if rid not in self._live:
            return []
        self.engine.abort_request(rid)
        self._live.discard(rid)
        self._counters["aborted"] += 1
        return [(rid, None)]

    def _step(self) -> list[Item]:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            self._counters["step_errors"] += 1
            logger.exception("engine step failed; failing %d requests in flight", len(self._live),
                             extra={"failed_request_ids": ",".join(sorted(self._live))})
            return self._fail_live(EngineStepError(f"the engine failed while running this request: "
                                                   f"{type(exc).__name__}: {exc}"))
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        return [(out.request_id, out) for out in outputs]

    def _fail_live(self, error: BaseException) -> list[Item]:
        ids = list(self._live)
        self._live.clear()
        try:
            self.engine.abort_request(ids)
        except Exception:
            logger.exception("aborting failed requests raised too")
        return [(rid, error) for rid in ids]

    def stats(self) -> EngineStats:
        s = self.engine.scheduler.stats()
        return EngineStats(
            num_running=s["num_running"], num_waiting=s["num_waiting"],
            num_total_blocks=self.engine.info.num_usable_blocks, num_free_blocks=s["num_free_blocks"],
            kv_cache_usage=s["kv_cache_usage"], prefix_cache_queries=s["prefix_cache_queries"],
            prefix_cache_hits=s["prefix_cache_hits"], num_preemptions=s["num_preemptions"],
            num_aborted=self._counters["aborted"], num_step_errors=self._counters["step_errors"],
            num_unfinished=self.engine.get_num_unfinished_requests(),
        )
