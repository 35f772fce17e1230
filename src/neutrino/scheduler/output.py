"""What the scheduler hands to the model runner for one step, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field

from neutrino.sampling_params import SamplingParams


@dataclass
class NewRequestData:
    """Everything the runner keeps about a request, sent once: the step it is first scheduled."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_id: int | None


@dataclass
class ScheduledRequest:
    """One request's share of a step, as a diff against what the runner already holds.

    The runner computes tokens at positions `[num_computed_tokens, num_computed_tokens + num_new_tokens)`
    of the request's tokens (its prompt plus the tokens it sampled itself); `new_block_ids` extend the
    block table it holds (all of it the first time, and again after a preemption emptied it).
    """

    request_id: str
    num_new_tokens: int  # a prefill chunk, or 1 for the last sampled token
    num_computed_tokens: int  # tokens already in the KV cache; the first position computed
    new_block_ids: list[int]  # blocks allocated since the runner last heard of this request
    sample: bool  # True when this step reaches the end of the known tokens: sample the next token
    prompt_logprobs_start: int | None = None  # position from which prompt logprobs are wanted, if any


@dataclass
class SchedulerOutput:
    """The batch for one `ModelRunner.execute` call."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)  # running order; flat batch order
    num_scheduled_tokens: int = 0  # sum of num_new_tokens
    new_requests: list[NewRequestData] = field(default_factory=list)  # scheduled for the first time
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
