"""What the engine returns: vLLM-style RequestOutput and CompletionOutput."""

from __future__ import annotations

from dataclasses import dataclass, field

# (token_id, logprob) pairs, most likely first
TopLogprobs = list[tuple[int, float]]


@dataclass
class TokenLogprob:
    """Logprob of one chosen token plus the top alternatives at its position."""

    token_id: int
    logprob: float
    top: TopLogprobs = field(default_factory=list)


@dataclass
class CompletionOutput:
    """One of the `n` completions of a request. `text`/`token_ids` are cumulative; `delta_*` are
    what this step added (for streaming)."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop", "length", "abort" or None while running
    stop_reason: int | str | None = None  # the stop token id or stop string that matched
    delta_text: str = ""
    delta_token_ids: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """The state of a request after an engine step (or at the end for `LLM.generate`)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    prompt_logprobs: list[TokenLogprob | None] | None = None  # entry 0 is None (no context)
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def num_generated_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)
