"""What a front end must know about a loaded engine to validate requests without touching it.

`EngineInfo` is a plain picklable record: the engine process sends it to the API server once at start,
and both sides check a request against it the same way (`check`), so a bad or oversized request is
refused in the API process before anything crosses to the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neutrino.errors import InvalidParameterError, RequestRejectedError
from neutrino.sampling_params import SamplingParams


@dataclass(frozen=True)
class EngineInfo:
    """The fixed facts of a loaded engine."""

    model_name: str
    model_path: str
    tokenizer_path: str  # where the tokenizer loads from
    max_model_len: int
    vocab_size: int
    block_size: int
    num_usable_blocks: int  # KV blocks a request can ever get
    max_num_seqs: int

    @property
    def capacity_tokens(self) -> int:
        return self.num_usable_blocks * self.block_size

    @property
    def context_limit(self) -> int:
        """Longest prompt + output that can run (the last token is never cached, hence + 1)."""
        return min(self.max_model_len, self.capacity_tokens + 1)

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """`ids` as a list when they are a non-empty list of token ids of this vocabulary."""
        out = list(ids)
        if not out:
            raise InvalidParameterError("prompt", "token id list must not be empty")
        bad = [t for t in out if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidParameterError("prompt", f"token ids must be integers in [0, {self.vocab_size}), got {bad[:5]}")
        return out

    def max_tokens(self, prompt_len: int, params: SamplingParams) -> int:
        """The request's output limit: its max_tokens, or what fits in the context; raises when none fits."""
        room = self.max_model_len - prompt_len
        if room <= 0 or (params.max_tokens is not None and params.max_tokens > room):
            want = "" if params.max_tokens is None else f" + max_tokens {params.max_tokens}"
            raise RequestRejectedError(
                f"prompt has {prompt_len} tokens{want}, which exceeds the model's maximum context length "
                f"of {self.max_model_len} tokens"
            )
        return params.max_tokens if params.max_tokens is not None else room

    def check(self, ids: Sequence[int], params: SamplingParams) -> list[int]:
        """Validated token ids of a request that can run; raises InvalidParameterError or
        RequestRejectedError otherwise."""
        token_ids = self.check_ids(ids)
        max_tokens = self.max_tokens(len(token_ids), params)
        needed = -(-(len(token_ids) + max_tokens - 1) // self.block_size)
        if needed > self.num_usable_blocks:
            raise RequestRejectedError(
                f"prompt has {len(token_ids)} tokens and max_tokens is {max_tokens}: it needs {needed} KV "
                f"blocks but the whole KV cache has {self.num_usable_blocks} blocks of {self.block_size} tokens"
            )
        return token_ids
