"""End-to-end tests of sampling features on real SmolLM2: stops, seeds, n, logprobs."""

from __future__ import annotations

import math
from typing import Any

from e2e_helpers import FRANCE, STORY, Greedy

from neutrino.sampling_params import SamplingParams


def greedy_params(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def sampled_params(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_tokens=max_tokens, **kw)


# ---- stop strings and stop tokens ----------------------------------------------------------------


def test_stop_strings_cut_output(llm: Any, greedy: Greedy) -> None:
    full = greedy(STORY, 12).text
    one_token, multi_token = " Nova", "ty of N"
    for stop in (one_token, multi_token):
        assert stop in full, f"reference text changed: {full!r}"
    outs = llm.generate(
        [STORY] * 5,
        [
            greedy_params(12, stop=[one_token]),
            greedy_params(12, stop=[multi_token]),
            greedy_params(12, stop=[multi_token], include_stop_str_in_output=True),
            greedy_params(12, stop=["no such text", " of", "city"]),  # "city" ends first
            greedy_params(12, stop=["zebra crossing"]),  # never matches
        ],
    )
    expected = [
        (full[: full.index(one_token)], one_token),
        (full[: full.index(multi_token)], multi_token),
        (full[: full.index(multi_token) + len(multi_token)], multi_token),
        (full[: full.index("city")], "city"),
    ]
    for out, (text, stop) in zip(outs, expected, strict=False):
        comp = out.outputs[0]
        assert comp.text == text
        assert comp.finish_reason == "stop"
        assert comp.stop_reason == stop
        # generation stopped at the token that completed the match
        assert stop in llm.tokenizer.decode(comp.token_ids)
        assert stop not in llm.tokenizer.decode(comp.token_ids[:-1])
    unmatched = outs[-1].outputs[0]
    assert unmatched.text == full
    assert unmatched.finish_reason == "length"
    assert unmatched.stop_reason is None


def test_stop_token_ids(llm: Any, greedy: Greedy) -> None:
    ref = greedy(STORY, 12).token_ids
    i = next(i for i in range(3, len(ref)) if ref[i] not in ref[:i])
    stop_id = ref[i]
    cut, kept = llm.generate(
        [STORY, STORY],
        [
            greedy_params(12, stop_token_ids=[stop_id]),
            greedy_params(12, stop_token_ids=[stop_id], include_stop_str_in_output=True),
        ],
    )
    for out in (cut, kept):
        comp = out.outputs[0]
        assert comp.token_ids == ref[: i + 1]
        assert comp.finish_reason == "stop"
        assert comp.stop_reason == stop_id
    # like vLLM, the stop token is in token_ids but its text is left out unless asked for
    assert cut.outputs[0].text == llm.tokenizer.decode(ref[:i])
    assert kept.outputs[0].text == llm.tokenizer.decode(ref[: i + 1])


# ---- seeds and n ---------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible(llm: Any) -> None:
    [alone] = llm.generate(STORY, sampled_params(20, seed=42))
    assert len(alone.outputs[0].token_ids) == 20
    # in another call, batched with an unseeded request and one with another seed: same result
    unseeded, batched, other_seed = llm.generate(
        ["Hello, my name is", STORY, STORY],
        [sampled_params(20), sampled_params(20, seed=42), sampled_params(20, seed=7)],
    )
    assert batched.outputs[0].token_ids == alone.outputs[0].token_ids
    assert batched.outputs[0].text == alone.outputs[0].text
    assert other_seed.outputs[0].token_ids != alone.outputs[0].token_ids
    assert len(unseeded.outputs[0].token_ids) == 20


def test_n_completions(llm: Any) -> None:
    params = sampled_params(10, n=3, seed=5)
    # completion i of n=3 with seed s samples like a request with seed s+i (SamplingParams.child)
    first, single = llm.generate([STORY, STORY], [params, sampled_params(10, seed=6)])
    [second] = llm.generate(STORY, params)
    assert [c.index for c in first.outputs] == [0, 1, 2]
    texts = [c.text for c in first.outputs]
    assert len(set(texts)) == 3, texts
    assert all(c.finish_reason == "length" and len(c.token_ids) == 10 for c in first.outputs)
    assert first.num_generated_tokens == 30
    assert [c.token_ids for c in second.outputs] == [c.token_ids for c in first.outputs]
    assert [c.text for c in second.outputs] == texts
    assert single.outputs[0].token_ids == first.outputs[1].token_ids


def test_n_greedy_gives_identical_completions(llm: Any, greedy: Greedy) -> None:
    [out] = llm.generate(FRANCE, greedy_params(4, n=2))
    assert len(out.outputs) == 2
    assert all(c.token_ids == greedy(FRANCE, 8).token_ids[:4] for c in out.outputs)


# ---- logprobs ------------------------------------------------------------------------------------


def test_greedy_logprobs(llm: Any, greedy: Greedy) -> None:
    [out] = llm.generate(FRANCE, greedy_params(8, logprobs=5))
    comp = out.outputs[0]
    assert comp.token_ids == greedy(FRANCE, 8).token_ids  # asking for logprobs changes nothing
    assert comp.logprobs is not None and len(comp.logprobs) == len(comp.token_ids)
    for tok, lp in zip(comp.token_ids, comp.logprobs, strict=True):
        assert lp.token_id == tok
        assert len(lp.top) == 5
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True)
        assert len({t for t, _ in lp.top}) == 5
        assert lp.top[0][0] == tok  # greedy: the sampled token is the top-1
        assert lp.logprob == lp.top[0][1]
        assert lp.logprob <= 0.0
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-4
    assert comp.cumulative_logprob is not None
    assert math.isclose(comp.cumulative_logprob, sum(lp.logprob for lp in comp.logprobs), abs_tol=1e-4)
    # no logprobs asked, none returned
    [plain] = llm.generate(FRANCE, greedy_params(2))
    assert plain.outputs[0].logprobs is None and plain.outputs[0].cumulative_logprob is None


def test_sampled_logprobs(llm: Any) -> None:
    [out] = llm.generate(STORY, sampled_params(8, seed=3, logprobs=5))
    comp = out.outputs[0]
    assert comp.logprobs is not None and len(comp.logprobs) == 8
    assert any(lp.top[0][0] != lp.token_id for lp in comp.logprobs)  # temperature 1 strays off argmax
    for tok, lp in zip(comp.token_ids, comp.logprobs, strict=True):
        assert lp.token_id == tok
        assert lp.logprob <= lp.top[0][1] + 1e-6
        top = dict(lp.top)
        if tok in top:
            assert math.isclose(top[tok], lp.logprob, abs_tol=1e-5)
        else:
            assert lp.logprob <= lp.top[-1][1] + 1e-6
    assert math.isclose(comp.cumulative_logprob, sum(lp.logprob for lp in comp.logprobs), abs_tol=1e-4)


def test_prompt_logprobs(llm: Any) -> None:
    [out] = llm.generate(FRANCE, greedy_params(1, prompt_logprobs=2))
    plp = out.prompt_logprobs
    assert plp is not None
    assert len(plp) == len(out.prompt_token_ids)
    assert plp[0] is None
    for tok, entry in zip(out.prompt_token_ids[1:], plp[1:], strict=True):
        assert entry is not None
        assert entry.token_id == tok
        assert len(entry.top) == 2
        assert entry.top[0][1] >= entry.top[1][1]
        assert entry.logprob <= entry.top[0][1] + 1e-6
        if tok == entry.top[0][0]:
            assert math.isclose(entry.logprob, entry.top[0][1], abs_tol=1e-6)
    assert out.outputs[0].logprobs is None


def test_prompt_logprobs_agree_with_sampled_logprobs(llm: Any) -> None:
    """Teacher forcing: the prompt logprobs of prompt+completion equal the completion's logprobs."""
    [gen] = llm.generate(FRANCE, greedy_params(5, logprobs=1))
    prompt_ids = gen.prompt_token_ids
    comp = gen.outputs[0]
    [scored] = llm.generate(prompt_ids + comp.token_ids, greedy_params(1, prompt_logprobs=1))
    tail = scored.prompt_logprobs[len(prompt_ids) :]
    assert [e.token_id for e in tail] == comp.token_ids
    for forced, sampled in zip(tail, comp.logprobs, strict=True):
        assert math.isclose(forced.logprob, sampled.logprob, abs_tol=2e-3)
        assert forced.top[0][0] == sampled.top[0][0]


def test_stop_string_on_the_last_allowed_token_finishes_as_stop(llm) -> None:
    """A stop string completed by the max_tokens-th token reports finish_reason 'stop', text cut."""
    from neutrino import SamplingParams

    prompt = "The capital of France is"
    full = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0].outputs[0]
    # the text of the first k tokens, with k chosen so that the last token adds a non-empty piece
    for k in range(len(full.token_ids), 1, -1):
        last_piece = llm.tokenizer.decode(full.token_ids[k - 1 : k]).strip()
        if last_piece:
            break
    params = SamplingParams(temperature=0, max_tokens=k, ignore_eos=True, stop=[last_piece])
    out = llm.generate(prompt, params)[0].outputs[0]
    assert out.finish_reason == "stop"
    assert out.stop_reason == last_piece
    assert last_piece not in out.text
