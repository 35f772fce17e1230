"""What crosses the pipe between the engine process and the API process.

Outputs go as deltas: an unfinished `RequestOutput` travels with its cumulative `text`, `token_ids` and
`logprobs` left out (only this step's `delta_*` and new logprobs), so a step costs the same to send at
token 10 and at token 2,000; the finished one travels whole. `OutputAccumulator` on the API side puts
the cumulative fields back. Errors travel as (class name, message, attributes), because exceptions with
their own `__init__` signature do not survive pickling.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from neutrino import errors
from neutrino.outputs import CompletionOutput, RequestOutput, TokenLogprob

WireError = tuple[str, str, dict[str, Any]]


def pack(out: RequestOutput) -> RequestOutput:
    """The wire form of an engine output."""
    if out.finished:
        return out
    return replace(out, outputs=[_pack_completion(c) for c in out.outputs])


def _pack_completion(c: CompletionOutput) -> CompletionOutput:
    new = c.logprobs[len(c.logprobs) - len(c.delta_token_ids):] if c.logprobs is not None else None
    return replace(c, text="", token_ids=[], logprobs=new)


class OutputAccumulator:
    """Rebuilds cumulative outputs from wire outputs (one instance per engine connection)."""

    def __init__(self) -> None:
        # request id -> per completion index: (text, token ids, logprobs or None)
        self._acc: dict[str, dict[int, tuple[str, list[int], list[TokenLogprob] | None]]] = {}

    def apply(self, item: tuple[str, Any]) -> tuple[str, RequestOutput | BaseException | None]:
        rid, payload = item
        if payload is None:  # aborted: nothing more comes for it
            self._acc.pop(rid, None)
            return rid, None
        if isinstance(payload, tuple):  # a WireError
            self._acc.pop(rid, None)
            return rid, rebuild_error(*payload)
        if payload.finished:
            self._acc.pop(rid, None)
            return rid, payload
        per_index = self._acc.setdefault(rid, {})
        for c in payload.outputs:
            text, ids, lps = per_index.get(c.index, ("", [], None))
            text += c.delta_text
            ids.extend(c.delta_token_ids)
            if c.logprobs is not None:
                lps = (lps or []) + c.logprobs
            per_index[c.index] = (text, ids, lps)
            c.text, c.token_ids = text, list(ids)
            c.logprobs = list(lps) if lps is not None else None
        return rid, payload

    def __len__(self) -> int:
        return len(self._acc)


def wire_error(exc: BaseException) -> WireError:
    attrs = {k: v for k, v in vars(exc).items() if isinstance(v, (int, float, str, bool, type(None)))}
    return type(exc).__name__, str(exc), attrs


def rebuild_error(name: str, message: str, attrs: dict[str, Any]) -> BaseException:
    """The error the engine process raised, as the same Neutrino class where it is one."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = errors.EngineStepError
        message = f"{name}: {message}"
    exc = cls.__new__(cls)
    exc.args = (message,)
    for key, value in attrs.items():
        setattr(exc, key, value)
    return exc
