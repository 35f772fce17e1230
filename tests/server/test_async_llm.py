"""AsyncLLM in-process on a tiny model: same results as the offline engine, validation before queuing,
admission control, abort on early exit, and a failing step that fails its requests but not the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_helpers import run

from neutrino import InvalidParameterError, RequestRejectedError, SamplingParams
from neutrino.engine.args import EngineArgs
from neutrino.engine.async_llm import AsyncLLM
from neutrino.errors import EngineStepError, EngineUnavailableError, QueueFullError

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_model: Path) -> Iterator[AsyncLLM]:
    args = EngineArgs(model=str(tiny_model), dtype="float32", num_blocks=64, max_num_seqs=2)
    yield AsyncLLM.from_engine_args(args, max_queued=2)


def assert_idle(llm: AsyncLLM) -> None:
    kv = llm.engine.scheduler.kv_cache_manager
    assert not llm.engine.has_unfinished_requests()
    assert kv.num_free_blocks == kv.num_usable_blocks


async def final_text(llm: AsyncLLM, prompt: Any, params: SamplingParams = GREEDY) -> str:
    outs = [out async for out in llm.generate(prompt, params)]
    assert outs[-1].finished and "".join(o.outputs[0].delta_text for o in outs) == outs[-1].outputs[0].text
    return outs[-1].outputs[0].text


def test_generate_matches_offline_engine(llm: AsyncLLM) -> None:
    prompts = ["Hello there", "The sea is", "One two"]
    offline = []
    for p in prompts:  # the same engine, driven synchronously before the thread starts
        llm.engine.add_request("offline", p, GREEDY)
        while llm.engine.has_unfinished_requests():
            outs = llm.engine.step()
        offline.append(outs[-1].outputs[0].text)

    async def go() -> list[str]:
        return list(await asyncio.gather(*[final_text(llm, p) for p in prompts]))

    assert run(llm, go) == offline
    assert_idle(llm)


def test_validation_and_admission_happen_before_queuing(llm: AsyncLLM) -> None:
    async def go() -> None:
        with pytest.raises(InvalidParameterError):
            llm.add_request("", GREEDY)
        with pytest.raises(RequestRejectedError, match="1024"):
            llm.add_request([5] * 1020, SamplingParams(max_tokens=10))
        with pytest.raises(InvalidParameterError) as info:
            llm.add_request("hi", SamplingParams(n=5))
        assert info.value.param == "n"
        streams = [llm.add_request("hi", SamplingParams(max_tokens=200, ignore_eos=True)) for _ in range(4)]
        with pytest.raises(QueueFullError):
            llm.add_request("hi", GREEDY)
        for stream in streams:
            stream.close()

    run(llm, go)
    assert_idle(llm)
    assert llm.stats().num_aborted >= 4


def test_early_exit_aborts(llm: AsyncLLM) -> None:
    async def go() -> None:
        gen = llm.generate("Once upon a time", SamplingParams(max_tokens=500, ignore_eos=True))
        async for _ in gen:
            break
        await gen.aclose()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if llm.stats().num_unfinished == 0:
                break

    run(llm, go)
    assert_idle(llm)


def test_failing_step_fails_requests_and_keeps_serving(llm: AsyncLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = llm.engine.step
    calls = {"n": 0}

    def flaky_step() -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated kernel failure")
        return real_step()

    monkeypatch.setattr(llm.engine, "step", flaky_step)

    async def go() -> str:
        with pytest.raises(EngineStepError, match="simulated"):
            await final_text(llm, "Hello there")
        return await final_text(llm, "Hello there")

    assert run(llm, go)
    assert llm.stats().num_step_errors == 1
    assert_idle(llm)


def test_shutdown_fails_waiting_consumers(llm: AsyncLLM) -> None:
    async def go() -> None:
        stream = llm.add_request("hi", SamplingParams(max_tokens=500, ignore_eos=True))
        llm.abort_all()
        with pytest.raises(EngineUnavailableError):
            async for _ in stream:
                pass

    run(llm, go)
    assert_idle(llm)
