"""Engine-side bookkeeping for one request: detokenizer, logprobs, and its parent when n > 1."""

from __future__ import annotations

from dataclasses import dataclass, field

from neutrino.engine.detokenizer import IncrementalDetokenizer
from neutrino.outputs import CompletionOutput, RequestOutput, TokenLogprob
from neutrino.request import Request


@dataclass
class ChildState:
    """One sequence (one of the n completions)."""

    request: Request
    index: int
    detokenizer: IncrementalDetokenizer
    logprobs: list[TokenLogprob] | None = None
    cumulative_logprob: float = 0.0
    delta_text: str = ""
    delta_token_ids: list[int] = field(default_factory=list)

    def completion(self) -> CompletionOutput:
        req = self.request
        out = CompletionOutput(
            index=self.index,
            text=self.detokenizer.output_text,
            token_ids=list(req.output_token_ids),
            cumulative_logprob=self.cumulative_logprob if self.logprobs is not None else None,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
            finish_reason=req.status.finish_reason,
            stop_reason=req.stop_reason,
            delta_text=self.delta_text,
            delta_token_ids=self.delta_token_ids,
        )
        self.delta_text, self.delta_token_ids = "", []
        return out


@dataclass
class ParentState:
    """A user request: its prompt and its n child sequences."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    children: list[ChildState]
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def finished(self) -> bool:
        return all(c.request.is_finished for c in self.children)

    def output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=[c.completion() for c in self.children],
            finished=self.finished,
            prompt_logprobs=self.prompt_logprobs,
            num_cached_tokens=self.children[0].request.num_cached_tokens,
        )
