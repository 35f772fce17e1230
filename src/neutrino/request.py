"""The engine's record of one sequence being generated."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from neutrino.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    """Lifecycle of a request inside the scheduler."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in (
            RequestStatus.FINISHED_STOPPED,
            RequestStatus.FINISHED_LENGTH,
            RequestStatus.FINISHED_ABORTED,
        )

    @property
    def finish_reason(self) -> str | None:
        """OpenAI-style finish reason ('stop', 'length', 'abort') or None while unfinished."""
        return self.value if self.finished else None


@dataclass
class Request:
    """One sequence: its prompt, its generated tokens and how far the KV cache has computed it.

    There is no prefill/decode phase: each step the scheduler computes tokens
    `[num_computed_tokens, num_tokens)` (possibly only a chunk of them) and the request samples
    a new token once `num_computed_tokens` has caught up with `num_tokens`.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_id: int | None = None
    max_tokens: int = 16  # resolved: sampling_params.max_tokens or what fits in max_model_len
    arrival_time: float = field(default_factory=time.monotonic)
    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first schedule
    num_preemptions: int = 0
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    # Sampler state that must survive batching (e.g. a seeded torch.Generator); opaque here.
    sampler_state: Any = None

    def __post_init__(self) -> None:
        self.all_token_ids: list[int] = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens."""
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)

    @property
    def is_finished(self) -> bool:
        return self.status.finished
