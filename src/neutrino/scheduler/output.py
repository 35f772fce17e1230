"""What the scheduler hands to the model runner for one step, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ScheduledRequest:
    """One request's share of a step.

    The runner computes tokens at positions `[num_computed_tokens, num_computed_tokens + len(token_ids))`.
    """

    request_id: str
    token_ids: list[int]  # the tokens to compute this step (a prefill chunk, or the last sampled token)
    num_computed_tokens: int  # tokens already in the KV cache; the first position of token_ids
    block_ids: list[int]  # the request's whole block table after this step's allocation
    sample: bool  # True when this step reaches the end of the known tokens: sample the next token
    prompt_logprobs_start: int | None = None  # position from which prompt logprobs are wanted, if any


@dataclass
class SchedulerOutput:
    """The batch for one `ModelRunner.execute` call."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)  # running order; flat batch order
    num_scheduled_tokens: int = 0  # sum of len(token_ids)
    preempted_request_ids: list[str] = field(default_factory=list)  # preempted during this schedule()
    finished_request_ids: list[str] = field(default_factory=list)  # freed since the last step

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class ModelRunnerOutput:
    """Sampled tokens (and logprobs) for the requests whose `sample` flag was set."""

    sampled_token_ids: dict[str, int] = field(default_factory=dict)
    # request_id -> (logprob of the sampled token, [(token_id, logprob), ...] top-k) when requested
    logprobs: dict[str, tuple[float, list[tuple[int, float]]]] = field(default_factory=dict)
    # request_id -> (first prompt position covered, [(token_id, logprob, top-k list), ...]) for the prompt
    # tokens whose logits were computed this step
    prompt_logprobs: dict[str, tuple[int, list[tuple[int, float, list[tuple[int, float]]]]]] = field(
        default_factory=dict
    )
