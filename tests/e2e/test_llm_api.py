"""End-to-end tests of the offline API (`LLM.generate`, `chat`, `stream`, aborts) on real SmolLM2."""

from __future__ import annotations

from typing import Any

from e2e_helpers import FRANCE, MATH_CHAT, STORY, Greedy, assert_engine_idle

from neutrino.sampling_params import SamplingParams

EOS = 2  # <|im_end|>, SmolLM2-Instruct's eos token


def greedy_params(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


# ---- generate ------------------------------------------------------------------------------------


def test_generate_single_string(llm: Any) -> None:
    [out] = llm.generate(FRANCE, greedy_params(8))
    assert out.finished
    assert out.prompt == FRANCE
    assert out.prompt_token_ids == llm.tokenizer(FRANCE)["input_ids"]
    [comp] = out.outputs
    assert comp.index == 0
    assert "Paris" in comp.text
    assert len(comp.token_ids) == 8
    assert comp.finish_reason == "length"
    assert comp.stop_reason is None
    assert comp.text == llm.tokenizer.decode(comp.token_ids, skip_special_tokens=True)


def test_generate_token_id_prompt_matches_string(llm: Any, greedy: Greedy) -> None:
    ids = llm.tokenizer(FRANCE)["input_ids"]
    [out] = llm.generate(ids, greedy_params(8))
    assert out.prompt is None
    assert out.prompt_token_ids == ids
    assert out.outputs[0].token_ids == greedy(FRANCE, 8).token_ids
    assert out.outputs[0].text == greedy(FRANCE, 8).text


def test_generate_list_keeps_prompt_order(llm: Any, greedy: Greedy) -> None:
    prompts = ["1, 2, 3, 4,", FRANCE, "The opposite of hot is"]
    singles = [greedy(p, 8).token_ids[:4] for p in prompts]  # each prompt run alone
    assert len({tuple(s) for s in singles}) == 3  # distinct, so an order mix-up cannot go unnoticed
    outs = llm.generate(prompts, greedy_params(4))
    assert [o.prompt for o in outs] == prompts
    assert len({o.request_id for o in outs}) == len(prompts)
    for out, ids in zip(outs, singles, strict=True):
        assert out.finished
        assert out.outputs[0].token_ids == ids
        assert out.outputs[0].text == llm.tokenizer.decode(ids)
    assert outs[0].outputs[0].text.startswith(" 5")


def test_generate_per_prompt_sampling_params(llm: Any, greedy: Greedy) -> None:
    outs = llm.generate([FRANCE, STORY], [greedy_params(3), greedy_params(5)])
    assert [len(o.outputs[0].token_ids) for o in outs] == [3, 5]
    assert outs[0].outputs[0].token_ids == greedy(FRANCE, 8).token_ids[:3]


def test_eos_stops_generation(llm: Any, greedy: Greedy, math_chat_ids: list[int]) -> None:
    comp = greedy(math_chat_ids, 48)
    assert comp.finish_reason == "stop"
    assert comp.stop_reason is None
    assert comp.token_ids[-1] == EOS
    assert EOS not in comp.token_ids[:-1]
    assert len(comp.token_ids) < 48
    assert "4" in comp.text
    assert "<|im_end|>" not in comp.text
    # the EOS token is not rendered even when special tokens are kept (vLLM semantics)
    [kept] = llm.generate(math_chat_ids, greedy_params(48, skip_special_tokens=False))
    assert kept.outputs[0].token_ids == comp.token_ids
    assert kept.outputs[0].text == comp.text


def test_ignore_eos_runs_to_max_tokens(llm: Any, greedy: Greedy, math_chat_ids: list[int]) -> None:
    stopped = greedy(math_chat_ids, 48)
    n = len(stopped.token_ids)
    assert stopped.token_ids[-1] == EOS
    max_tokens = n + 3
    plain, special = llm.generate(
        [math_chat_ids, math_chat_ids],
        [
            greedy_params(max_tokens, ignore_eos=True),
            greedy_params(max_tokens, ignore_eos=True, skip_special_tokens=False),
        ],
    )
    for out in (plain, special):
        comp = out.outputs[0]
        assert comp.finish_reason == "length"
        assert len(comp.token_ids) == max_tokens
        assert comp.token_ids[:n] == stopped.token_ids  # EOS at the same place, then more
    assert "<|im_end|>" not in plain.outputs[0].text
    assert plain.outputs[0].text.startswith(stopped.text)
    assert "<|im_end|>" in special.outputs[0].text


# ---- chat ----------------------------------------------------------------------------------------


def test_chat_uses_chat_template(llm: Any, greedy: Greedy, math_chat_ids: list[int]) -> None:
    assert llm.apply_chat_template(MATH_CHAT) == math_chat_ids
    [via_chat] = llm.chat(MATH_CHAT, greedy_params(48))
    via_ids = greedy(math_chat_ids, 48)
    assert via_chat.prompt_token_ids == math_chat_ids
    assert via_chat.outputs[0].token_ids == via_ids.token_ids
    assert via_chat.outputs[0].text == via_ids.text


def test_chat_list_of_conversations(llm: Any) -> None:
    france = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    outs = llm.chat([MATH_CHAT, france], greedy_params(8))
    assert len(outs) == 2
    assert outs[0].prompt_token_ids == llm.apply_chat_template(MATH_CHAT)
    assert outs[1].prompt_token_ids == llm.apply_chat_template(france)
    assert "4" in outs[0].outputs[0].text
    assert "Paris" in outs[1].outputs[0].text


# ---- streaming -----------------------------------------------------------------------------------


def test_stream_matches_generate(llm: Any, greedy: Greedy) -> None:
    steps = list(llm.stream(FRANCE, greedy_params(8)))
    ref = greedy(FRANCE, 8)
    assert "".join(s.outputs[0].delta_text for s in steps) == ref.text
    assert [t for s in steps for t in s.outputs[0].delta_token_ids] == ref.token_ids
    assert [s.finished for s in steps] == [False] * (len(steps) - 1) + [True]
    assert len({s.request_id for s in steps}) == 1
    last = steps[-1].outputs[0]
    assert last.text == ref.text
    assert last.token_ids == ref.token_ids
    assert last.finish_reason == "length"
    for s in steps:  # text and token_ids are cumulative
        assert ref.text.startswith(s.outputs[0].text)


def test_stream_close_early_aborts(llm: Any) -> None:
    kv = llm.engine.scheduler.kv_cache_manager
    stream = llm.stream(STORY, greedy_params(64))
    first = [next(stream) for _ in range(3)]
    assert not first[-1].finished
    assert llm.engine.has_unfinished_requests()
    assert kv.num_free_blocks < kv.num_usable_blocks
    stream.close()
    assert_engine_idle(llm)
    assert llm.engine.step() == []


def test_stream_with_stop_string_holds_back_partial_match(llm: Any, greedy: Greedy) -> None:
    full = greedy(STORY, 12).text
    stop = "ty of N"  # spans several tokens: " city", " of", " Nova"
    assert stop in full
    steps = list(llm.stream(STORY, greedy_params(12, stop=[stop])))
    deltas = [s.outputs[0].delta_text for s in steps]
    # deltas cannot be taken back, so "ty" of " city" must have been held until the match
    assert "".join(deltas) == full[: full.index(stop)]
    assert steps[-1].outputs[0].stop_reason == stop


def test_stream_utf8_never_splits_characters(llm: Any) -> None:
    cases = [
        ("🎉😀🎉😀🎉😀🎉😀🎉😀", greedy_params(12)),  # each emoji is 3 byte-level tokens
        ("你好世界。你好世界。你好世界。你好世界。", greedy_params(12, stop=["\n"])),
    ]
    for prompt, params in cases:
        steps = list(llm.stream(prompt, params))
        deltas = [s.outputs[0].delta_text for s in steps]
        final = steps[-1].outputs[0]
        assert not any("\ufffd" in d for d in deltas), deltas
        assert "".join(deltas) == final.text
        assert "\ufffd" not in final.text
        assert any(len(ch.encode()) >= 3 for ch in final.text), final.text  # multi-byte chars came out
        assert "" in deltas  # some token completed no character and produced no text


# ---- abort ---------------------------------------------------------------------------------------


def test_abort_through_engine(llm: Any) -> None:
    engine = llm.engine
    kv = engine.scheduler.kv_cache_manager
    engine.add_request("abort-a", STORY, greedy_params(64))
    engine.add_request("abort-b", FRANCE, SamplingParams(n=2, temperature=1.0, seed=1, max_tokens=64))
    seen: set[str] = set()
    for _ in range(3):
        for out in engine.step():
            seen.add(out.request_id)
            assert not out.finished
    assert seen == {"abort-a", "abort-b"}
    assert engine.get_num_unfinished_requests() == 2
    held = kv.num_usable_blocks - kv.num_free_blocks
    assert held >= 3  # one block per sequence at least

    engine.abort_request("abort-a")
    assert engine.get_num_unfinished_requests() == 1
    assert kv.num_usable_blocks - kv.num_free_blocks < held
    outs = engine.step()
    assert [o.request_id for o in outs] == ["abort-b"]
    assert len(outs[0].outputs) == 2

    engine.abort_request(["abort-b", "no-such-request"])
    engine.abort_request("abort-a")  # already aborted: harmless
    assert_engine_idle(llm)
    assert engine.step() == []


def test_engine_usable_after_abort(llm: Any, greedy: Greedy) -> None:
    llm.engine.add_request("abort-c", STORY, greedy_params(64))
    llm.engine.step()
    llm.engine.abort_request("abort-c")
    [out] = llm.generate(FRANCE, greedy_params(3))
    assert out.outputs[0].token_ids == greedy(FRANCE, 8).token_ids[:3]
