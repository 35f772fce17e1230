"""Prefill and batch-1 decode speed measured through the engine's public API (`LLM.generate`/`stream`).

- Prefill: `repeats` prompts of `prefill_len` tokens of real text (lee_background.cor, seeded offsets),
  one at a time, each with `max_tokens=1`; tok/s = prompt tokens / wall time of that request (which
  includes sampling the one token). The median over the repeats is reported.
- Decode: batch 1, a `decode_prompt_len`-token prompt, `decode_len` tokens generated greedily with EOS
  ignored and streamed; tok/s = (decode_len - 1) / (time of the last token - time of the first). The
  median over the repeats is reported.
One short warm-up request runs first. Prompts differ from each other, so prefix caching cannot help.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from neutrino.bench.workload import slice_prompts, text_token_pool
from neutrino.compression.evaluate.protocol import (
    DEFAULT_DECODE_LEN,
    DEFAULT_DECODE_PROMPT_LEN,
    DEFAULT_PREFILL_LEN,
    DEFAULT_REPEATS,
)
from neutrino.errors import InvalidParameterError


@dataclass(frozen=True)
class SpeedResult:
    """Median prefill and batch-1 decode throughput, tokens per second."""

    prefill_tok_s: float
    decode_tok_s: float
    prefill_len: int
    decode_prompt_len: int
    decode_len: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_speed(
    llm: Any,
    prefill_len: int = DEFAULT_PREFILL_LEN,
    decode_prompt_len: int = DEFAULT_DECODE_PROMPT_LEN,
    decode_len: int = DEFAULT_DECODE_LEN,
    repeats: int = DEFAULT_REPEATS,
) -> SpeedResult:
    """Prefill and decode tok/s of `llm` (a `neutrino.LLM`), see the module docstring."""
    from neutrino.sampling_params import SamplingParams

    for name, value, low in (("prefill_len", prefill_len, 1), ("decode_prompt_len", decode_prompt_len, 1),
                             ("decode_len", decode_len, 2), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidParameterError(name, f"expected an integer >= {low}, got {value!r}")
    pool = text_token_pool(llm.tokenizer, 4 * max(prefill_len, decode_prompt_len) + 8)
    prefill_prompts = slice_prompts(pool, repeats, prefill_len, prefill_len, seed=11)
    decode_prompts = slice_prompts(pool, repeats, decode_prompt_len, decode_prompt_len, seed=12)
    llm.generate([pool[:16]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm-up
    prefill = [_prefill_tok_s(llm, p, SamplingParams(temperature=0, max_tokens=1)) for p in prefill_prompts]
    params = SamplingParams(temperature=0, max_tokens=decode_len, ignore_eos=True)
    decode = [_decode_tok_s(llm, p, params) for p in decode_prompts]
    return SpeedResult(statistics.median(prefill), statistics.median(decode), prefill_len, decode_prompt_len,
                       decode_len, repeats)


def _prefill_tok_s(llm: Any, prompt: list[int], params: Any) -> float:
    start = time.perf_counter()
    llm.generate([prompt], params)
    return len(prompt) / (time.perf_counter() - start)


def _decode_tok_s(llm: Any, prompt: list[int], params: Any) -> float:
    first = last = None
    count = 0
    for out in llm.stream(prompt, params):
        now = time.perf_counter()
        count = len(out.outputs[0].token_ids)
        first = first if first is not None else now
        last = now
    assert first is not None and last is not None
    if count < 2 or last <= first:
        raise InvalidParameterError("decode_len", f"the decode run produced {count} tokens; need at least 2")
    return (count - 1) / (last - first)
