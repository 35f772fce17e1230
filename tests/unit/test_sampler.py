"""Sampler and logits processors on hand-made distributions (CPU, vocab of a few tokens)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from neutrino.request import Request
from neutrino.sample import Sampler, compute_prompt_logprobs
from neutrino.sample import logits_processors as lp
from neutrino.sample import sampler as sampler_mod
from neutrino.sampling_params import SamplingParams

V = 10


def make_request(
    prompt: list[int] | None = None, output: Sequence[int] = (), eos: int | None = 9, **params: Any
) -> Request:
    req = Request("r", list(prompt or [0]), SamplingParams(**params), eos_token_id=eos)
    for t in output:
        req.append_output_token(t)
    return req


def logits_of(probs: list[float]) -> torch.Tensor:
    """Logits (log probs) of a hand-made distribution.  -> [1, len(probs)]"""
    return torch.tensor([probs], dtype=torch.float32).log()


def kept(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


# ---------------------------------------------------------------- filters (masks)


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 5.0, 2.0, 4.0]])
    assert kept(lp.top_k_mask(logits, torch.tensor([3]))[0]) == [1, 3, 5]
    assert kept(lp.top_k_mask(logits, torch.tensor([1]))[0]) == [3]


def test_top_k_disabled_by_zero_and_large_k() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 5.0]])
    assert lp.top_k_mask(logits, torch.tensor([0])).all()
    assert lp.top_k_mask(logits, torch.tensor([100])).all()


def test_top_k_keeps_ties_at_the_boundary() -> None:
    logits = torch.tensor([[5.0, 4.0, 4.0, 3.0, 4.0]])
    assert kept(lp.top_k_mask(logits, torch.tensor([2]))[0]) == [0, 1, 2, 4]


def test_top_p_keeps_smallest_set_reaching_p() -> None:
    logits = logits_of([0.1, 0.5, 0.05, 0.3, 0.05])
    cases = {0.4: [1], 0.6: [1, 3], 0.85: [0, 1, 3], 0.999: [0, 1, 2, 3, 4]}
    for top_p, expected in cases.items():
        assert kept(lp.top_p_mask(logits, torch.tensor([top_p]))[0]) == expected, top_p


def test_top_p_always_keeps_top_token_and_one_disables() -> None:
    logits = logits_of([0.2, 0.7, 0.1])
    assert kept(lp.top_p_mask(logits, torch.tensor([0.01]))[0]) == [1]
    assert lp.top_p_mask(logits, torch.tensor([1.0])).all()


def test_top_p_keeps_ties_at_the_boundary() -> None:
    logits = logits_of([0.4, 0.2, 0.2, 0.1, 0.1])
    assert kept(lp.top_p_mask(logits, torch.tensor([0.5]))[0]) == [0, 1, 2]
    assert kept(lp.top_p_mask(logits, torch.tensor([0.85]))[0]) == [0, 1, 2, 3, 4]


def test_top_p_applies_to_the_top_k_renormalised_distribution() -> None:
    logits = logits_of([0.4, 0.3, 0.2, 0.1])
    assert kept(lp.top_p_mask(logits, torch.tensor([0.5]))[0]) == [0, 1]
    # after top-2 the distribution is [4/7, 3/7]: the first token alone reaches 0.5
    mask = lp.top_k_top_p_mask(logits, torch.tensor([2]), torch.tensor([0.5]))
    assert kept(mask[0]) == [0]


def test_top_k_top_p_per_row_parameters() -> None:
    logits = logits_of([0.4, 0.3, 0.2, 0.1]).repeat(3, 1)
    mask = lp.top_k_top_p_mask(logits, torch.tensor([0, 3, 1]), torch.tensor([0.65, 1.0, 1.0]))
    assert [kept(m) for m in mask] == [[0, 1], [0, 1, 2], [0]]


def test_numpy_sort_matches_torch_sort() -> None:
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)).round()
    logits[0, :10] = float("-inf")
    expected = logits.sort(dim=-1, descending=True).values
    assert torch.equal(lp.sort_descending(logits), expected)


def test_inverse_cdf_sample_never_draws_zero_probability() -> None:
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]]).repeat(4, 1)
    u = torch.tensor([0.0, 0.2499, 0.25, 1.0 - 2**-53], dtype=torch.float64)
    assert sampler_mod.inverse_cdf_sample(probs, u).tolist() == [1, 1, 3, 3]


def test_min_p_keeps_tokens_above_fraction_of_max() -> None:
    logits = logits_of([0.1, 0.5, 0.15, 0.25]).repeat(3, 1)
    mask = lp.min_p_mask(logits, torch.tensor([0.25, 0.6, 0.0]))
    assert [kept(m) for m in mask] == [[1, 2, 3], [1], [0, 1, 2, 3]]


def test_apply_mask_sets_minus_inf() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    out = lp.apply_mask(logits, torch.tensor([[True, False, True]]))
    assert out.tolist() == [[1.0, float("-inf"), 3.0]]
    assert logits.tolist() == [[1.0, 2.0, 3.0]]  # pure


# ---------------------------------------------------------------- penalties and bias


def test_repetition_penalty_divides_positive_multiplies_negative() -> None:
    row = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = lp.apply_repetition_penalty(row, [0, 1, 1], 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]
    assert row.tolist() == [2.0, -1.0, 0.5, 3.0]  # pure


def test_presence_frequency_penalties_formula() -> None:
    row = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = lp.apply_presence_frequency_penalties(row, [0, 0, 0, 2], presence=0.5, frequency=0.25)
    assert out.tolist() == pytest.approx([1.0 - 0.75 - 0.5, 1.0, 1.0 - 0.25 - 0.5, 1.0])


def test_logit_bias_and_min_tokens_processors() -> None:
    row = torch.zeros(4)
    assert lp.apply_logit_bias(row, {1: 2.5, 3: -1.0, 99: 7.0}).tolist() == [0.0, 2.5, 0.0, -1.0]
    assert lp.apply_min_tokens(row, [2]).tolist() == [0.0, 0.0, float("-inf"), 0.0]


def _processed(req: Request, logits: torch.Tensor) -> torch.Tensor:
    return sampler_mod._apply_row_processors(logits, [req])[0]


def test_sampler_repetition_uses_prompt_and_output_penalties_only_output() -> None:
    logits = torch.full((1, 5), 2.0)
    rep = make_request(prompt=[0], output=[1], repetition_penalty=2.0)
    assert _processed(rep, logits).tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    pres = make_request(prompt=[0], output=[1, 1], presence_penalty=1.0, frequency_penalty=0.5)
    assert _processed(pres, logits).tolist() == [2.0, 0.0, 2.0, 2.0, 2.0]


def test_min_tokens_masks_eos_and_stop_ids_until_reached() -> None:
    logits = torch.zeros(1, V)
    req = make_request(output=[1], eos=9, min_tokens=2, stop_token_ids=[4])
    row = _processed(req, logits)
    assert kept(row == float("-inf")) == [4, 9]
    req.append_output_token(2)
    assert torch.equal(_processed(req, logits), logits[0])


def test_greedy_with_logit_bias_and_min_tokens() -> None:
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    sampler = Sampler(seed=0)
    assert sampler(logits, [make_request(temperature=0.0)]).token_ids == [2]
    assert sampler(logits, [make_request(temperature=0.0, logit_bias={3: 4.0})]).token_ids == [3]
    req = make_request(temperature=0.0, eos=2, min_tokens=1)
    assert sampler(logits, [req]).token_ids == [3]


def test_plain_greedy_batch_is_one_argmax(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(1))
    reqs = [make_request(temperature=0.0, seed=i if i % 2 else None) for i in range(6)]

    def fail(*args: object) -> None:
        raise AssertionError("general path used for a plain greedy batch")

    monkeypatch.setattr(Sampler, "_sample", fail)
    out = Sampler()(logits, reqs)
    assert out.token_ids == logits.argmax(-1).tolist()
    assert out.logprobs == [None] * 6


# ---------------------------------------------------------------- randomness


def _run_seeded(reqs: list[Request], logits: torch.Tensor, steps: int, sampler: Sampler) -> list[list[int]]:
    """Sample `steps` tokens for each request with fixed logits; returns the token lists."""
    for _ in range(steps):
        out = sampler(logits, reqs)
        for req, tok in zip(reqs, out.token_ids, strict=True):
            req.append_output_token(tok)
    return [r.output_token_ids for r in reqs]


def test_seeded_request_independent_of_batch_and_sampler() -> None:
    row = torch.randn(V, generator=torch.Generator().manual_seed(3))
    alone = _run_seeded([make_request(seed=42, top_k=7)], row[None], 20, Sampler())[0]
    batch = [
        make_request(seed=7),
        make_request(),
        make_request(seed=42, top_k=7),
        make_request(temperature=0.0),
        make_request(temperature=0.7, top_p=0.9),
    ]
    others = torch.randn(5, V, generator=torch.Generator().manual_seed(4))
    others[2] = row
    torch.manual_seed(123)
    in_batch = _run_seeded(batch, others, 20, Sampler(seed=5))[2]
    assert in_batch == alone
    again = _run_seeded([make_request(seed=42, top_k=7)], row[None], 20, Sampler(seed=99))[0]
    assert again == alone


def test_seeded_request_independent_of_earlier_requests() -> None:
    sampler = Sampler()
    logits = torch.zeros(1, V)
    first = _run_seeded([make_request(seed=1)], logits, 10, sampler)[0]
    _run_seeded([make_request(), make_request(seed=1)], logits.repeat(2, 1), 10, sampler)
    assert _run_seeded([make_request(seed=1)], logits, 10, sampler)[0] == first


def test_different_seeds_differ() -> None:
    logits = torch.zeros(2, V)
    a, b = _run_seeded([make_request(seed=1), make_request(seed=2)], logits, 20, Sampler())
    assert a != b


def test_unseeded_sampling_follows_the_distribution() -> None:
    torch.manual_seed(0)
    probs = [0.5, 0.3, 0.15, 0.05]
    n_rows, steps = 2000, 10
    logits = logits_of(probs).repeat(n_rows, 1)
    reqs = [make_request() for _ in range(n_rows)]
    counts = [0] * len(probs)
    sampler = Sampler()
    for _ in range(steps):
        for tok in sampler(logits, reqs).token_ids:
            counts[tok] += 1
    n = n_rows * steps
    chi2 = sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs, strict=True))
    assert chi2 < 30.0, counts  # df=3: p(chi2 > 30) is about 1e-6


def test_filtered_tokens_are_never_sampled() -> None:
    torch.manual_seed(0)
    logits = logits_of([0.3, 0.25, 0.2, 0.15, 0.1]).repeat(200, 1)
    reqs = [make_request(top_k=2, temperature=1.5) for _ in range(100)]
    reqs += [make_request(min_p=0.6, temperature=0.8) for _ in range(100)]
    out = Sampler()(logits, reqs).token_ids
    assert set(out[:100]) == {0, 1}
    assert set(out[100:]) <= {0, 1, 2}


# ---------------------------------------------------------------- logprobs


def test_logprobs_are_raw_log_softmax_with_descending_top_k() -> None:
    logits = torch.tensor([[1.0, 3.0, 0.5, 2.0, -1.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    reqs = [
        make_request(temperature=0.5, repetition_penalty=1.5, output=[1], logprobs=3),
        make_request(temperature=0.0, logprobs=0),
    ]
    out = Sampler(seed=0)(logits, reqs)
    raw = torch.log_softmax(logits, dim=-1)
    chosen, top = out.logprobs[0]
    assert chosen == pytest.approx(raw[0, out.token_ids[0]].item())
    assert [t for t, _ in top] == [1, 3, 0]
    assert [v for _, v in top] == pytest.approx(raw[0, [1, 3, 0]].tolist())
    assert out.logprobs[1] == (pytest.approx(raw[1, 2].item()), [])


def test_logprobs_none_when_not_requested() -> None:
    out = Sampler()(torch.zeros(2, V), [make_request(), make_request(logprobs=2)])
    assert out.logprobs[0] is None
    assert len(out.logprobs[1][1]) == 2


def test_prompt_logprobs() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]])
    result = compute_prompt_logprobs(logits, [1, 0], k=2)
    raw = torch.log_softmax(logits, dim=-1)
    assert [(t, pytest.approx(v)) for t, v, _ in result] == [(1, raw[0, 1].item()), (0, raw[1, 0].item())]
    assert [t for t, _ in result[0][2]] == [2, 1]
    assert math.isclose(result[1][2][0][1], raw[1, 0].item(), rel_tol=1e-6)
    assert compute_prompt_logprobs(logits, [1, 0], k=0)[0][2] == []
    with pytest.raises(ValueError):
        compute_prompt_logprobs(logits, [1], k=1)


def test_top_k_beyond_int64_keeps_every_token() -> None:
    """A huge top_k (an HTTP client may send 2**64) means "no top-k", not an overflow in the step."""
    logits = torch.tensor([[0.0, 9.0, 1.0, 2.0]])
    out = Sampler()(logits, [make_request(temperature=1.0, top_k=2**64, seed=3)])
    ref = Sampler()(logits, [make_request(temperature=1.0, top_k=0, seed=3)])
    assert out.token_ids == ref.token_ids
