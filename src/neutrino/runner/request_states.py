"""The runner's own record of every request it has been sent, kept up to date from scheduler diffs.

A request arrives once as `NewRequestData`; each later step only says how many tokens to compute and
which blocks were added. The runner appends the tokens it samples itself, so it never reads the
engine's requests. A preempted request keeps its state (tokens, seeded generator) and loses its blocks
and its batch row; a finished one is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neutrino.sampling_params import SamplingParams
from neutrino.scheduler.output import NewRequestData, SchedulerOutput


@dataclass
class CachedRequestState:
    """What the runner knows of one request (the attributes the sampler reads, like a Request's)."""

    request_id: str
    all_token_ids: list[int]  # prompt, then every token sampled so far
    num_prompt_tokens: int
    sampling_params: SamplingParams
    eos_token_id: int | None
    block_ids: list[int] = field(default_factory=list)
    row: int | None = None  # its row in the persistent block table while it runs
    num_synced_blocks: int = 0  # block ids already written into that row
    sampler_state: Any = None  # e.g. a seeded torch.Generator (see Sampler)

    @classmethod
    def from_new(cls, data: NewRequestData) -> CachedRequestState:
        return cls(data.request_id, list(data.prompt_token_ids), len(data.prompt_token_ids),
                   data.sampling_params, data.eos_token_id)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.all_token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - self.num_prompt_tokens


class RequestStates:
    """Request id -> CachedRequestState, plus the free rows of a persistent batch of `max_rows`."""

    def __init__(self, max_rows: int) -> None:
        self.states: dict[str, CachedRequestState] = {}
        self._free_rows = list(range(max_rows - 1, -1, -1))

    def __getitem__(self, request_id: str) -> CachedRequestState:
        return self.states[request_id]

    def __len__(self) -> int:
        return len(self.states)

    def apply(self, out: SchedulerOutput) -> list[CachedRequestState]:
        """Bring the states up to date with one step's scheduler output; returns the scheduled states
        in batch order, each with a row and its whole block table."""
        for rid in out.finished_request_ids:
            state = self.states.pop(rid, None)
            if state is not None:
                self._release_row(state)
        for rid in out.preempted_request_ids:
            state = self.states[rid]
            state.block_ids = []
            self._release_row(state)
        for data in out.new_requests:
            self.states[data.request_id] = CachedRequestState.from_new(data)
        scheduled = []
        for sched in out.scheduled:
            state = self.states[sched.request_id]
            state.block_ids.extend(sched.new_block_ids)
            if state.row is None:
                state.row = self._free_rows.pop()
            scheduled.append(state)
        return scheduled

    def _release_row(self, state: CachedRequestState) -> None:
        if state.row is not None:
            self._free_rows.append(state.row)
            state.row, state.num_synced_blocks = None, 0
