"""Bad input at the offline API raises typed errors naming the problem, and the engine keeps working."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import FRANCE, KV_CACHE_MEMORY, Greedy, assert_engine_idle

from neutrino import LLM, CheckpointError, InvalidParameterError, RequestRejectedError
from neutrino.sampling_params import SamplingParams

SMALL_MAX_MODEL_LEN = 64


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"logprobs": 50}, "logprobs"),
        ({"prompt_logprobs": -1}, "prompt_logprobs"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"min_tokens": 20, "max_tokens": 10}, "min_tokens"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
    ],
)
def test_invalid_sampling_params(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param
    assert param in str(info.value)


def assert_still_generates(llm: Any, greedy: Greedy) -> None:
    assert_engine_idle(llm)
    [out] = llm.generate(FRANCE, SamplingParams(temperature=0.0, max_tokens=2))
    assert out.outputs[0].token_ids == greedy(FRANCE, 8).token_ids[:2]


@pytest.mark.parametrize(
    ("prompt", "param", "detail"),
    [
        ("", "prompt", "empty"),
        ([0, 49152], "prompt", "49152"),
        ([5, -1], "prompt", "-1"),
        ([1, 2.5], "prompt", "2.5"),
        ([], "prompts", "at least one"),
    ],
)
def test_invalid_prompt(llm: Any, greedy: Greedy, prompt: Any, param: str, detail: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        llm.generate(prompt, SamplingParams(max_tokens=4))
    assert info.value.param == param
    assert detail in str(info.value)
    assert_still_generates(llm, greedy)


def test_bad_prompt_in_a_batch_leaves_nothing_queued(llm: Any, greedy: Greedy) -> None:
    with pytest.raises(InvalidParameterError, match="prompt"):
        llm.generate([FRANCE, "Hello", ""], SamplingParams(max_tokens=4))
    assert_still_generates(llm, greedy)


def test_sampling_params_count_mismatch(llm: Any, greedy: Greedy) -> None:
    with pytest.raises(InvalidParameterError) as info:
        llm.generate([FRANCE, "Hello"], [SamplingParams()] * 3)
    assert info.value.param == "sampling_params"
    assert_still_generates(llm, greedy)


def test_duplicate_request_id(llm: Any, greedy: Greedy) -> None:
    llm.engine.add_request("dup", FRANCE, SamplingParams(max_tokens=4))
    try:
        with pytest.raises(InvalidParameterError) as info:
            llm.engine.add_request("dup", FRANCE, SamplingParams(max_tokens=4))
        assert info.value.param == "request_id"
    finally:
        llm.engine.abort_request("dup")
    assert_still_generates(llm, greedy)


def test_prompt_too_long_for_model_context(llm: Any, greedy: Greedy) -> None:
    limit = llm.engine.max_model_len
    with pytest.raises(RequestRejectedError) as info:
        llm.generate([1] * (limit + 1), SamplingParams(max_tokens=1))
    assert str(limit + 1) in str(info.value) and str(limit) in str(info.value)
    assert_still_generates(llm, greedy)


def test_unknown_engine_option() -> None:
    with pytest.raises(InvalidParameterError) as info:
        LLM(not_an_option=1)
    assert info.value.param == "not_an_option"
    assert "max_model_len" in str(info.value)  # lists the known options


def test_nonexistent_model_path(tmp_path: Any) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(CheckpointError) as info:
        LLM(str(missing))
    assert str(missing) in str(info.value)


def test_model_directory_without_config(tmp_path: Any) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        LLM(str(tmp_path))


def test_max_model_len_beyond_model_limit() -> None:
    with pytest.raises(InvalidParameterError) as info:
        LLM(max_model_len=10**7, kv_cache_memory=KV_CACHE_MEMORY)
    assert info.value.param == "max_model_len"
    assert str(10**7) in str(info.value)


# ---- a small context window ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_llm() -> Iterator[Any]:
    llm = LLM(dtype="float32", max_model_len=SMALL_MAX_MODEL_LEN, kv_cache_memory=KV_CACHE_MEMORY)
    yield llm
    assert_engine_idle(llm)


def prompt_of(llm: Any, num_tokens: int) -> list[int]:
    ids = llm.tokenizer("The quick brown fox jumps over the lazy dog. " * 20)["input_ids"]
    assert len(ids) >= num_tokens
    return ids[:num_tokens]


def test_prompt_longer_than_max_model_len(small_llm: Any) -> None:
    with pytest.raises(RequestRejectedError) as info:
        small_llm.generate(prompt_of(small_llm, 100), SamplingParams(max_tokens=1))
    msg = str(info.value)
    assert "100" in msg and str(SMALL_MAX_MODEL_LEN) in msg
    assert_engine_idle(small_llm)


def test_prompt_plus_max_tokens_too_long(small_llm: Any) -> None:
    with pytest.raises(RequestRejectedError) as info:
        small_llm.generate(prompt_of(small_llm, 40), SamplingParams(max_tokens=30))
    msg = str(info.value)
    assert "40" in msg and "30" in msg and str(SMALL_MAX_MODEL_LEN) in msg
    assert_engine_idle(small_llm)


def test_small_context_still_generates_up_to_the_limit(small_llm: Any) -> None:
    prompt = prompt_of(small_llm, 58)
    exact, unbounded = small_llm.generate(
        [prompt, prompt],
        [
            SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True),
            SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True),
        ],
    )
    for out in (exact, unbounded):  # max_tokens None fills the context: 64 - 58 = 6 tokens
        assert len(out.outputs[0].token_ids) == SMALL_MAX_MODEL_LEN - 58
        assert out.outputs[0].finish_reason == "length"
    assert exact.outputs[0].token_ids == unbounded.outputs[0].token_ids
