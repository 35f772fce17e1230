"""The official `openai` client (sync, async, streaming) against a real server process.

The model is a tiny random Llama, so texts are gibberish but deterministic: greedy results must be
identical however they are requested (alone, batched, streamed), and usage must match /tokenize."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from conftest import API_KEY, ServerProcess

PROMPT = "The quick brown fox"
CHAT = [{"role": "user", "content": "Say something about the sea."}]
GREEDY: dict[str, Any] = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def count_tokens(server: ServerProcess, **body: Any) -> int:
    resp = server.post("/tokenize", body)
    assert resp.status_code == 200, resp.text
    return resp.json()["count"]


def test_models_list(client: openai.OpenAI, model: str) -> None:
    assert [m.id for m in client.models.list().data] == [model]
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion_usage_is_exact(client: openai.OpenAI, model: str, server: ServerProcess) -> None:
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=7, **GREEDY)
    assert out.object == "text_completion" and out.choices[0].text
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert out.usage.prompt_tokens == count_tokens(server, prompt=PROMPT)
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == out.usage.prompt_tokens + 7


def test_completion_stream_matches_non_stream(client: openai.OpenAI, model: str) -> None:
    full = client.completions.create(model=model, prompt=PROMPT, max_tokens=10, **GREEDY)
    chunks = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == full.usage.model_dump()


def test_chat_sync_and_stream(client: openai.OpenAI, model: str, server: ServerProcess) -> None:
    full = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, **GREEDY)
    msg = full.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert full.usage.prompt_tokens == count_tokens(server, messages=CHAT)
    assert full.usage.completion_tokens == 8
    stream = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == msg.content
    assert chunks[-1].usage.completion_tokens == 8


def test_max_completion_tokens(client: openai.OpenAI, model: str) -> None:
    out = client.chat.completions.create(model=model, messages=CHAT, max_completion_tokens=3, **GREEDY)
    assert out.usage.completion_tokens == 3 and out.choices[0].finish_reason == "length"


def test_async_client_concurrent_requests_match_alone(client: openai.OpenAI, model: str,
                                                      server: ServerProcess) -> None:
    prompts = [f"{PROMPT} number {i}" for i in range(6)]
    alone = [client.completions.create(model=model, prompt=p, max_tokens=6, **GREEDY).choices[0].text
             for p in prompts]

    async def run() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)
        async with aclient:
            outs = await asyncio.gather(*[aclient.completions.create(model=model, prompt=p, max_tokens=6, **GREEDY)
                                          for p in prompts])
            stream = await aclient.chat.completions.create(model=model, messages=CHAT, max_tokens=4, stream=True,
                                                           **GREEDY)
            assert "".join([c.choices[0].delta.content or "" async for c in stream])
        return [o.choices[0].text for o in outs]

    assert asyncio.run(run()) == alone


def test_batched_prompts(client: openai.OpenAI, model: str) -> None:
    prompts = ["Hello", "The sea is", "One two three"]
    alone = [client.completions.create(model=model, prompt=p, max_tokens=5, **GREEDY).choices[0].text
             for p in prompts]
    out = client.completions.create(model=model, prompt=prompts, max_tokens=5, n=2, **GREEDY)
    assert [c.index for c in out.choices] == list(range(6))
    assert [c.text for c in out.choices] == [t for t in alone for _ in range(2)]
    assert out.usage.completion_tokens == 30


def test_n_greater_than_one(client: openai.OpenAI, model: str) -> None:
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, n=3, temperature=1.0, seed=11,
                                    extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert len({c.text for c in out.choices}) > 1  # distinct seeds per child
    assert out.usage.completion_tokens == 18
    chunks = list(client.chat.completions.create(model=model, messages=CHAT, max_tokens=4, n=2, stream=True,
                                                 **GREEDY))
    finished = {ch.index for c in chunks for ch in c.choices if ch.finish_reason}
    assert finished == {0, 1}


def test_seed_reproducibility(client: openai.OpenAI, model: str) -> None:
    def sample(seed: int) -> str:
        return client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=1.0, seed=seed,
                                         extra_body={"ignore_eos": True}).choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert sample(4321) != first


def test_logprobs(client: openai.OpenAI, model: str) -> None:
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=5, logprobs=3, **GREEDY)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == out.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3 and chosen <= 0
        assert chosen >= max(top.values()) - 1e-4  # greedy picks the most likely token
    chat = client.chat.completions.create(model=model, messages=CHAT, max_tokens=4, logprobs=True, top_logprobs=2,
                                          **GREEDY)
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(c.top_logprobs) == 2 for c in content)
    assert "".join(c.token for c in content) == chat.choices[0].message.content
    assert all(c.logprob >= c.top_logprobs[0].logprob - 1e-4 for c in content)


def test_stop_string(client: openai.OpenAI, model: str) -> None:
    text = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, **GREEDY).choices[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    expected = text[: text.index(stop)]
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, stop=[stop], **GREEDY)
    assert out.choices[0].text == expected and out.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=12, stop=stop, stream=True,
                                            **GREEDY))
    assert "".join(c.choices[0].text for c in chunks) == expected


def test_sampling_extensions_and_logit_bias(client: openai.OpenAI, model: str, server: ServerProcess) -> None:
    base: dict[str, Any] = dict(model=model, prompt=PROMPT, max_tokens=6)
    greedy = client.completions.create(**base, temperature=0.0).choices[0].text
    for extra in ({"top_k": 1}, {"min_p": 1.0}):  # both keep only the most likely token
        assert client.completions.create(**base, temperature=1.0, seed=3, extra_body=extra).choices[0].text == greedy
    penalized = client.completions.create(**base, temperature=0.0, presence_penalty=2.0, frequency_penalty=2.0,
                                          extra_body={"repetition_penalty": 1.5, "min_tokens": 2})
    assert penalized.choices[0].text
    token = server.post("/tokenize", {"prompt": " sea"}).json()["tokens"][-1]
    forced = client.completions.create(**base, temperature=0.0, logit_bias={str(token): 100})
    assert forced.choices[0].text == server.post("/detokenize", {"tokens": [token] * 6}).json()["prompt"]


def test_error_statuses(server: ServerProcess, client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=model, prompt=PROMPT, temperature=-1)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model=model, prompt=[5] * 1100, max_tokens=4)
    assert "1100" in long.value.message and "1024" in long.value.message
    with pytest.raises(openai.BadRequestError) as room:
        client.completions.create(model=model, prompt=[5] * 1000, max_tokens=100)
    assert all(s in room.value.message for s in ("1000", "100", "1024"))
    assert room.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model=model, messages=CHAT, tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object"}}}])
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="no-such-model", prompt=PROMPT)
    assert missing.value.body["code"] == "model_not_found"
    wrong = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model=model, prompt=PROMPT)
    with pytest.raises(openai.BadRequestError):  # a stream's errors come before the first event
        client.chat.completions.create(model=model, messages=CHAT, stream=True, top_p=5.0)
    assert client.completions.create(model=model, prompt=PROMPT, max_tokens=1).choices[0].text is not None
