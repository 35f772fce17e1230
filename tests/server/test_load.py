"""A bounded load test on loopback: 64 concurrent streaming clients, about a quarter of them leaving at a
random point. Every request that was not abandoned must produce exactly the greedy text of its prompt
run alone, although the small KV cache forces preemption and recomputation; at the end the engine is
idle with every KV block free, and the abort counters add up."""

from __future__ import annotations

import asyncio
import json
import random

import httpx

from conftest import ServerProcess

WORDS = ("the harbour was built of stone from the northern hills and the railway came late to the town "
         "where fishing boats crowded the quay every spring").split()
PROMPTS = [" ".join(WORDS[i: i + 2 + (i * 5) % 11]) for i in range(16)]
MAX_TOKENS = 40
NUM_REQUESTS = 128
CONCURRENCY = 64
ABANDON_FRACTION = 0.25


def body(prompt: str, stream: bool) -> dict:
    return {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True, "stream": stream}


async def stream_one(client: httpx.AsyncClient, prompt: str, abandon_after: int | None) -> str | None:
    """The streamed text, or None when this client left after `abandon_after` chunks."""
    text, chunks = "", 0
    async with client.stream("POST", "/v1/completions", json=body(prompt, True)) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return text
            event = json.loads(line[len("data: "):])
            assert "error" not in event, event
            text += event["choices"][0]["text"]
            chunks += 1
            if abandon_after is not None and chunks >= abandon_after:
                return None  # leaving the block closes the connection mid-stream
    raise AssertionError("stream ended without [DONE]")


async def run_load(server: ServerProcess, plan: list[tuple[str, int | None]]) -> list[str | None]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=120,
                                 limits=limits) as client:
        async def one(prompt: str, abandon_after: int | None) -> str | None:
            async with gate:
                return await stream_one(client, prompt, abandon_after)

        return await asyncio.gather(*[one(p, a) for p, a in plan])


def test_concurrent_streams_with_random_disconnects(server: ServerProcess) -> None:
    alone = {}
    for p in PROMPTS:
        resp = server.post("/v1/completions", body(p, False))
        assert resp.status_code == 200, resp.text
        alone[p] = resp.json()["choices"][0]["text"]
    before = server.wait_idle()
    rng = random.Random(1234)
    plan = [(PROMPTS[i % len(PROMPTS)], rng.randint(1, MAX_TOKENS - 4) if rng.random() < ABANDON_FRACTION else None)
            for i in range(NUM_REQUESTS)]
    results = asyncio.run(run_load(server, plan))

    abandoned = sum(a is not None for _, a in plan)
    assert 0.15 * NUM_REQUESTS < abandoned < 0.35 * NUM_REQUESTS
    for (prompt, abandon_after), text in zip(plan, results, strict=True):
        if abandon_after is None:
            assert text == alone[prompt], prompt
    after = server.wait_idle()
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    finished = {r: delta[f'neutrino_request_success_total{{finished_reason="{r}"}}'] for r in
                ("stop", "length", "abort", "error")}
    assert finished["error"] == 0 and finished["stop"] == 0
    assert finished["length"] + finished["abort"] == NUM_REQUESTS
    assert NUM_REQUESTS - abandoned <= finished["length"]
    assert 0 < finished["abort"] <= abandoned  # a client may leave after its last token was computed
    assert delta["neutrino_engine_aborted_requests_total"] <= finished["abort"]
    assert delta["neutrino_num_preemptions_total"] > 0  # the KV cache was under pressure
