"""The sampler: turns one step's logits into one token per request (plus logprobs on request).

Pipeline per row, in this order: logit_bias -> min_tokens (forbid EOS / stop_token_ids) ->
repetition penalty -> presence/frequency penalties -> [greedy rows: argmax] -> temperature ->
top-k -> top-p -> min-p -> draw.

Logprobs are those of the model's raw distribution: log_softmax of the unprocessed float32
logits, before any penalty, bias, temperature or filter (vLLM v1's default "raw_logprobs").
So a sampled token's logprob tells how likely the model found it, not how likely the
processed distribution made it.

Hot path: a batch where every request is greedy with no bias, penalty or min_tokens is one
argmax over the batch. Rare per-request features are applied row by row; temperature and the
top-k/top-p/min-p filters are vectorised over the non-greedy rows.

Randomness: the draw is inverse-CDF sampling with one uniform u per row: the first token whose
cumulative probability exceeds u (one draw per row instead of vocab-many for the exponential
race; cumsum + searchsorted, no host sync). A request with `seed` draws its u only from
its own `torch.Generator`, created once and stored in `sampler_state` of its request, so its tokens
do not depend on the rest of the batch or on earlier requests. Other requests share the
sampler's generator (seeded from `seed`, or from torch's global RNG when `seed` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from neutrino.sample import logits_processors as lp
from neutrino.sampling_params import SamplingParams


class SamplingRequest(Protocol):
    """What the sampler reads of a request (the runner's CachedRequestState, or a Request)."""

    sampling_params: SamplingParams
    eos_token_id: int | None
    sampler_state: Any

    @property
    def all_token_ids(self) -> Sequence[int]: ...

    @property
    def output_token_ids(self) -> Sequence[int]: ...

    @property
    def num_output_tokens(self) -> int: ...


# (logprob of the sampled token, top-k [(token_id, logprob), ...] in descending order)
TokenLogprobs = tuple[float, list[tuple[int, float]]]


@dataclass
class SamplerOutput:
    """One step's result, aligned with the `requests` list given to the sampler."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]  # None where sampling_params.logprobs is None


class Sampler:
    """Samples the next token of each request from a `[num_reqs, vocab]` float32 logits tensor."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, logits: torch.Tensor, requests: Sequence[SamplingRequest]) -> SamplerOutput:
        """Sample one token per row.  logits: [num_reqs, vocab], row i belongs to requests[i]."""
        assert logits.dim() == 2 and logits.shape[0] == len(requests), (logits.shape, len(requests))
        logits = logits.float()
        if all(_is_plain_greedy(r) for r in requests):
            sampled = logits.argmax(dim=-1)  # [num_reqs]
        else:
            sampled = self._sample(logits, requests)
        return SamplerOutput(sampled.tolist(), _gather_logprobs(logits, sampled, requests))

    def _sample(self, logits: torch.Tensor, requests: Sequence[SamplingRequest]) -> torch.Tensor:
        """The general path.  logits: [num_reqs, vocab] -> token ids [num_reqs]."""
        processed = _apply_row_processors(logits, requests)  # [num_reqs, vocab]
        rows = [i for i, r in enumerate(requests) if not r.sampling_params.greedy]
        if len(rows) == len(requests):  # no greedy row: skip the argmax and the row gather
            return self._draw(_filtered_probs(processed, [r.sampling_params for r in requests]), requests)
        sampled = processed.argmax(dim=-1)  # [num_reqs]; kept for the greedy rows
        if rows:
            index = torch.tensor(rows, dtype=torch.long, device=logits.device)
            sub_reqs = [requests[i] for i in rows]
            probs = _filtered_probs(processed[index], [r.sampling_params for r in sub_reqs])
            sampled[index] = self._draw(probs, sub_reqs)
        return sampled

    def _draw(self, probs: torch.Tensor, requests: Sequence[SamplingRequest]) -> torch.Tensor:
        """Inverse-CDF draw, one uniform per row.  probs: [rows, vocab] -> token ids [rows]."""
        device = probs.device
        u = torch.rand(len(requests), dtype=torch.float64, device=device, generator=self._generator(device))
        for i, req in enumerate(requests):
            if req.sampling_params.seed is not None:
                gen = _request_generator(req, device)
                u[i] = torch.rand((), dtype=torch.float64, device=device, generator=gen)
        return inverse_cdf_sample(probs, u)

    def _generator(self, device: torch.device) -> torch.Generator:
        """The shared generator for unseeded requests on `device` (created on first use)."""
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            seed = self._seed if self._seed is not None else int(torch.randint(2**62, ()).item())
            gen.manual_seed(seed)
            self._generators[device] = gen
        return gen


def _is_plain_greedy(req: SamplingRequest) -> bool:
    """True when the row's token is the argmax of the raw logits (no processing at all)."""
    return req.sampling_params.greedy and not _needs_row_processing(req)


def _needs_row_processing(req: SamplingRequest) -> bool:
    p = req.sampling_params
    return bool(
        p.logit_bias
        or _min_tokens_active(req)
        or p.repetition_penalty != 1.0
        or p.presence_penalty != 0.0
        or p.frequency_penalty != 0.0
    )


def _min_tokens_active(req: SamplingRequest) -> bool:
    return req.num_output_tokens < req.sampling_params.min_tokens


def _apply_row_processors(logits: torch.Tensor, requests: Sequence[SamplingRequest]) -> torch.Tensor:
    """Bias, min_tokens and penalties, row by row for the rows that use them.  [num_reqs, vocab]."""
    out = logits
    for i, req in enumerate(requests):
        if not _needs_row_processing(req):
            continue
        if out is logits:
            out = logits.clone()
        out[i] = _process_row(out[i], req)
    return out


def _process_row(row: torch.Tensor, req: SamplingRequest) -> torch.Tensor:
    """All per-request processors on one row.  row: [vocab]."""
    p = req.sampling_params
    if p.logit_bias:
        row = lp.apply_logit_bias(row, p.logit_bias)
    if _min_tokens_active(req):
        stop_ids = list(p.stop_token_ids)
        if req.eos_token_id is not None:
            stop_ids.append(req.eos_token_id)
        row = lp.apply_min_tokens(row, stop_ids)
    row = lp.apply_repetition_penalty(row, req.all_token_ids, p.repetition_penalty)
    return lp.apply_presence_frequency_penalties(
        row, req.output_token_ids, p.presence_penalty, p.frequency_penalty
    )


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p, softmax; vectorised.  [rows, vocab] -> probs [rows, vocab]."""
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], dtype=logits.dtype, device=device)
    logits = lp.apply_temperature(logits, temperature)
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        vocab = logits.shape[-1]  # a top_k at or above the vocabulary keeps everything (and fits in int64)
        top_k = torch.tensor([min(p.top_k, vocab) for p in params], dtype=torch.long, device=device)
        top_p = torch.tensor([p.top_p for p in params], dtype=logits.dtype, device=device)
        logits = lp.apply_mask(logits, lp.top_k_top_p_mask(logits, top_k, top_p))
    if any(p.min_p > 0.0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], dtype=logits.dtype, device=device)
        logits = lp.apply_mask(logits, lp.min_p_mask(logits, min_p))
    return logits.softmax(dim=-1)


def inverse_cdf_sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Token t of each row with probability probs[t] / sum(probs), given uniforms u in [0, 1).

    probs: [rows, vocab] (zeros allowed, need not sum to 1); u: [rows] float64. The CDF is summed
    in float64 so tiny probabilities keep their share; a zero-probability token is never drawn.
    """
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)  # [rows, vocab]
    total = cdf[:, -1:]  # [rows, 1]
    target = torch.minimum(u.unsqueeze(-1) * total, torch.nextafter(total, torch.zeros_like(total)))
    index = torch.searchsorted(cdf, target, right=True)  # [rows, 1] first index with cdf > target
    return index.squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _request_generator(req: SamplingRequest, device: torch.device) -> torch.Generator:
    """The seeded request's own generator, created and seeded once, kept in `sampler_state`."""
    gen = req.sampler_state
    if not isinstance(gen, torch.Generator) or gen.device != device:
        assert req.sampling_params.seed is not None
        gen = torch.Generator(device=device)
        gen.manual_seed(req.sampling_params.seed)
        req.sampler_state = gen
    return gen


def _gather_logprobs(
    logits: torch.Tensor, sampled: torch.Tensor, requests: Sequence[SamplingRequest]
) -> list[TokenLogprobs | None]:
    """Raw logprobs of the sampled tokens and the top-k, for the rows that asked for them.

    logits: [num_reqs, vocab] (unprocessed); sampled: [num_reqs].
    """
    result: list[TokenLogprobs | None] = [None] * len(requests)
    rows = [i for i, r in enumerate(requests) if r.sampling_params.logprobs is not None]
    if not rows:
        return result
    index = torch.tensor(rows, dtype=torch.long, device=logits.device)
    logprobs = torch.log_softmax(logits[index], dim=-1)  # [rows, vocab]
    chosen = logprobs.gather(-1, sampled[index].unsqueeze(-1)).squeeze(-1).tolist()  # [rows]
    max_k = min(max(requests[i].sampling_params.logprobs or 0 for i in rows), logits.shape[-1])
    top = logprobs.topk(max_k, dim=-1) if max_k > 0 else None  # values/indices: [rows, max_k]
    top_vals = top.values.tolist() if top is not None else [[] for _ in rows]
    top_ids = top.indices.tolist() if top is not None else [[] for _ in rows]
    for j, i in enumerate(rows):
        k = requests[i].sampling_params.logprobs or 0
        result[i] = (chosen[j], list(zip(top_ids[j][:k], top_vals[j][:k], strict=True)))
    return result
