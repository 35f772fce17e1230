"""The perplexity protocol: window plan coverage, and exactness against log-probabilities computed
by hand from the model's logits (tiny random Llama, float32; tolerance 1e-9 relative on NLL sums,
which come from the same float32 logits)."""

from __future__ import annotations

import math

import pytest
import torch

from neutrino.compression.evaluate.perplexity import (
    as_scorer,
    perplexity,
    plan_windows,
    select_segments,
    text_token_ids,
)
from neutrino.errors import InvalidParameterError

IDS = [(i * 7919 + 13) % 4000 + 100 for i in range(150)]  # arbitrary fixed token ids


@pytest.mark.parametrize(("n", "window", "stride"), [(2, 4, 1), (10, 512, 256), (512, 512, 256),
                                                     (513, 512, 256), (1000, 512, 256), (37, 8, 3),
                                                     (100, 16, 15), (64, 2, 1)])
def test_windows_score_every_token_once(n: int, window: int, stride: int) -> None:
    windows = plan_windows(n, window, stride)
    scored = [t for w in windows for t in range(w.score_from, w.end)]
    assert scored == list(range(1, n))  # every token but the first, once, in order
    for w in windows:
        assert 0 <= w.begin < w.score_from <= w.end <= n and w.end - w.begin <= window
    for w in windows[1:]:  # later windows keep at least window - stride tokens of context
        assert w.score_from - w.begin >= min(window - stride, w.score_from)


def test_window_plan_matches_the_documented_layout() -> None:
    got = [(w.begin, w.end, w.score_from) for w in plan_windows(1000, 512, 256)]
    assert got == [(0, 512, 1), (256, 768, 512), (488, 1000, 768)]


@pytest.mark.parametrize(("window", "stride"), [(1, 1), (512, 512), (512, 0), (512, 600), (True, 1)])
def test_bad_window_or_stride(window, stride) -> None:
    with pytest.raises(InvalidParameterError):
        plan_windows(100, window, stride)


def test_too_few_tokens() -> None:
    with pytest.raises(InvalidParameterError, match="token_ids"):
        plan_windows(1)


def _token_logprob(scorer, ids: list[int], begin: int, t: int) -> float:
    """log p(ids[t] | ids[begin:t]) from a forward pass over exactly that context."""
    logits = scorer.score(ids[begin:t])[-1]
    return float(torch.log_softmax(logits.double(), dim=-1)[ids[t]])


def test_single_window_equals_hand_computed_perplexity(tiny_llm) -> None:
    ids = IDS[:40]
    logits = as_scorer(tiny_llm).score(ids).double()  # [40, vocab]
    nll = -torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None]).mean().item()
    result = perplexity(tiny_llm, ids, window=64, stride=32)
    assert result.num_scored == 39 and result.num_windows == 1
    assert result.nll == pytest.approx(nll, rel=1e-6)
    assert result.ppl == pytest.approx(math.exp(nll), rel=1e-6)


def test_strided_windows_give_each_token_its_documented_context(tiny_llm) -> None:
    window, stride, ids = 16, 6, IDS[:60]
    scorer = as_scorer(tiny_llm)
    total = 0.0
    for t in range(1, len(ids)):  # independent statement of the protocol, token by token
        if t < window:
            begin = 0
        else:
            end = min(window + stride * math.ceil((t + 1 - window) / stride), len(ids))
            begin = end - window
        total -= _token_logprob(scorer, ids, begin, t)
    result = perplexity(tiny_llm, ids, window=window, stride=stride)
    assert result.num_scored == len(ids) - 1
    assert result.nll == pytest.approx(total / (len(ids) - 1), rel=1e-5)


def test_perplexity_is_deterministic(tiny_llm) -> None:
    a = perplexity(tiny_llm, IDS, window=32, stride=16)
    b = perplexity(tiny_llm, IDS, window=32, stride=16)
    assert a == b


def test_window_longer_than_the_model_context_is_rejected(tiny_llm) -> None:
    too_long = tiny_llm.engine.max_model_len + 1
    with pytest.raises(InvalidParameterError, match="window"):
        perplexity(tiny_llm, list(range(too_long + 10)), window=too_long, stride=8)


def test_not_a_model() -> None:
    with pytest.raises(InvalidParameterError, match="model"):
        perplexity(object(), IDS)


@pytest.mark.parametrize(("n", "cap", "expected"), [
    (1000, None, [(0, 1000)]),
    (1000, 1000, [(0, 1000)]),  # the text fits: the whole stream
    (1000, 100, [(0, 100)]),  # one segment: a prefix
    (100_000, 8192, [(0, 2048), (32650, 34698), (65301, 67349), (97952, 100_000)]),
    (10_000, 5000, [(0, 1666), (4167, 5833), (8334, 10_000)]),
    (8193, 8192, [(0, 2048), (2048, 4096), (4096, 6144), (6145, 8193)]),
])
def test_segments_are_evenly_spaced_and_disjoint(n: int, cap: int | None, expected) -> None:
    segments = select_segments(n, cap)
    assert [(s.start, s.stop) for s in segments] == expected
    assert all(a.stop <= b.start for a, b in zip(segments, segments[1:], strict=False))
    assert cap is None or sum(len(s) for s in segments) <= cap


def test_bad_token_cap() -> None:
    for cap in (0, 1, True, 2.5):
        with pytest.raises(InvalidParameterError, match="max_tokens"):
            select_segments(100, cap)  # type: ignore[arg-type]


def test_capped_perplexity_pools_the_segments(tiny_llm) -> None:
    ids = IDS * 2  # 300 tokens
    assert perplexity(tiny_llm, ids, 32, 16, max_tokens=120) == perplexity(tiny_llm, ids[:120], 32, 16)
    segments = select_segments(len(ids), 250, segment_len=100)
    assert len(segments) == 3
    parts = [perplexity(tiny_llm, ids[s.start : s.stop], 32, 16) for s in segments]
    pooled = perplexity(tiny_llm, ids, 32, 16, max_tokens=250, segment_len=100)
    assert pooled.num_segments == 3 and pooled.num_scored == sum(p.num_scored for p in parts) == 3 * 82
    assert pooled.num_windows == sum(p.num_windows for p in parts)
    nll = sum(p.nll * p.num_scored for p in parts) / pooled.num_scored
    assert pooled.nll == pytest.approx(nll, rel=1e-12)


def test_text_token_ids(tiny_llm) -> None:
    tok = tiny_llm.tokenizer
    text = "The quick brown fox jumps over the lazy dog. " * 10
    assert text_token_ids(tok, text) == list(tok(text, add_special_tokens=False)["input_ids"])
    with pytest.raises(InvalidParameterError, match="text"):
        text_token_ids(tok, "a")
