"""The engine core in its own process (AsyncLLM with a ProcessCore, as `neutrino serve` runs it): the same
tokens, logprobs and text as the in-process engine, deltas rebuilt into cumulative outputs, aborts that
free the KV cache, a load error raised with its own class, and a killed engine process reported to every
waiting consumer."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from llm_helpers import run

from neutrino import CheckpointError, InvalidParameterError, SamplingParams
from neutrino.engine.args import EngineArgs
from neutrino.engine.async_llm import AsyncLLM
from neutrino.engine.core_wire import OutputAccumulator, pack, rebuild_error, wire_error
from neutrino.engine.llm_engine import LLMEngine
from neutrino.errors import EngineUnavailableError
from neutrino.outputs import CompletionOutput, RequestOutput, TokenLogprob

PARAMS = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=2)


def engine_args(model: Path) -> EngineArgs:
    return EngineArgs(model=str(model), dtype="float32", num_blocks=64, max_num_seqs=4)


async def collect(llm: AsyncLLM, prompt: str, params: SamplingParams = PARAMS) -> list[RequestOutput]:
    return [out async for out in llm.generate(prompt, params)]


def offline(model: Path, prompts: list[str]) -> list[CompletionOutput]:
    engine = LLMEngine(engine_args(model))
    finals = []
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, PARAMS)
        while engine.has_unfinished_requests():
            outs = engine.step()
        finals.append(outs[-1].outputs[0])
    return finals


@pytest.mark.slow
def test_engine_process_matches_in_process_engine(tiny_model: Path) -> None:
    prompts = ["Hello there", "The sea is", "One two three"]
    llm = AsyncLLM.from_engine_args(engine_args(tiny_model), engine_process=True)
    assert llm.engine_pid not in (None, os.getpid())

    async def go() -> tuple[list[list[RequestOutput]], Any]:
        results = await asyncio.gather(*[collect(llm, p) for p in prompts])
        # an abort mid-stream: its KV blocks come back
        gen = llm.generate("Once upon a time", SamplingParams(max_tokens=500, ignore_eos=True))
        async for _ in gen:
            break
        await gen.aclose()
        for _ in range(300):
            await asyncio.sleep(0.01)
            stats = llm.stats()
            if stats.num_unfinished == 0 and stats.num_free_blocks == stats.num_total_blocks:
                break
        return list(results), llm.stats()

    results, stats = run(llm, go)
    for outs, want in zip(results, offline(tiny_model, prompts), strict=True):
        final = outs[-1].outputs[0]
        assert (final.token_ids, final.text) == (want.token_ids, want.text)
        assert [lp.token_id for lp in final.logprobs or []] == want.token_ids
        for out in outs[:-1]:  # every intermediate output is cumulative, as in-process
            c = out.outputs[0]
            assert c.token_ids == want.token_ids[: len(c.token_ids)] and len(c.logprobs or []) == len(c.token_ids)
            assert want.text.startswith(c.text)
        assert "".join(o.outputs[0].delta_text for o in outs) == want.text
    assert stats.num_unfinished == 0 and stats.num_free_blocks == stats.num_total_blocks
    assert stats.num_aborted == 1


@pytest.mark.slow
def test_killed_engine_process_fails_consumers(tiny_model: Path) -> None:
    llm = AsyncLLM.from_engine_args(engine_args(tiny_model), engine_process=True)

    async def go() -> None:
        stream = llm.add_request("hi", SamplingParams(max_tokens=1000, ignore_eos=True))
        async for _ in stream:
            break
        assert llm.engine_pid is not None
        os.kill(llm.engine_pid, signal.SIGKILL)
        with pytest.raises(EngineUnavailableError, match="engine process exited .exit code -9"):
            async for _ in stream:
                pass
        assert not llm.is_running
        with pytest.raises(EngineUnavailableError):
            llm.add_request("hi", PARAMS)

    run(llm, go)


def test_load_error_in_engine_process_keeps_its_class(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as info:
        AsyncLLM.from_engine_args(EngineArgs(model=str(tmp_path)), engine_process=True)
    assert "config.json" in str(info.value)


def test_wire_deltas_rebuild_cumulative_outputs() -> None:
    acc = OutputAccumulator()
    texts, ids, lps = ["He", "llo", " you"], [[1], [2, 3], [4]], []
    for step, (t, d) in enumerate(zip(texts, ids, strict=True)):
        lps += [TokenLogprob(i, -0.5) for i in d]
        full = CompletionOutput(0, "".join(texts[: step + 1]), sum(ids[: step + 1], []), -1.0, list(lps),
                                delta_text=t, delta_token_ids=d)
        wire = pack(RequestOutput("r", None, [7], [full]))
        assert wire.outputs[0].text == "" and wire.outputs[0].token_ids == []
        assert wire.outputs[0].logprobs == lps[-len(d):]
        rid, out = acc.apply(("r", wire))
        assert isinstance(out, RequestOutput) and rid == "r"
        assert (out.outputs[0].text, out.outputs[0].token_ids, out.outputs[0].logprobs) == (
            full.text, full.token_ids, full.logprobs)
    assert len(acc) == 1
    assert acc.apply(("r", None)) == ("r", None) and len(acc) == 0  # an abort forgets it


def test_wire_errors_keep_class_message_and_attributes() -> None:
    exc = rebuild_error(*wire_error(InvalidParameterError("top_p", "must be in (0, 1], got 2")))
    assert isinstance(exc, InvalidParameterError) and str(exc) == "invalid 'top_p': must be in (0, 1], got 2"
    assert exc.param == "top_p"  # type: ignore[attr-defined]
    other = rebuild_error(*wire_error(KeyError("x")))
    assert type(other).__name__ == "EngineStepError" and "KeyError" in str(other)
