"""A client that goes away (streaming or not) aborts its request at once: the engine counts it aborted,
computes nothing more for it, and every KV block returns to the free pool."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from conftest import ServerProcess

LONG = {"prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True, "temperature": 0}
ABORTED = "neutrino_engine_aborted_requests_total"
ABORT_REASON = 'neutrino_request_success_total{finished_reason="abort"}'


def test_streams_closed_midway_are_aborted(server: ServerProcess) -> None:
    before = server.wait_idle()
    with contextlib.ExitStack() as stack:
        body = {**LONG, "max_tokens": 200, "stream": True}  # 4 x 200 tokens fit in the KV cache together
        streams = [stack.enter_context(server.client.stream("POST", "/v1/completions", json=body)) for _ in range(4)]
        readers = [resp.iter_lines() for resp in streams]  # keep them: a dropped reader closes its response
        for resp, lines in zip(streams, readers, strict=True):
            assert resp.status_code == 200
            assert sum(1 for _, line in zip(range(6), lines, strict=False) if line.startswith("data: ")) >= 2
        m = server.metrics()
        assert m["neutrino_num_requests_running"] == 4, {k: v for k, v in m.items() if "requests" in k or "kv" in k}
    after = server.wait_idle(timeout=5)
    assert after[ABORTED] - before[ABORTED] == 4
    assert after[ABORT_REASON] - before[ABORT_REASON] == 4


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_non_stream_client_timeout_aborts(server: ServerProcess, route: str) -> None:
    before = server.wait_idle()
    body = dict(LONG)
    if route.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": body.pop("prompt")}]
    with pytest.raises(httpx.ReadTimeout):
        server.client.post(route, json=body, timeout=httpx.Timeout(60, read=0.5))
    after = server.wait_idle(timeout=5)
    assert after[ABORTED] - before[ABORTED] == 1
    assert after["neutrino_generation_tokens_total"] == before["neutrino_generation_tokens_total"]


def test_waiting_request_disconnect_is_aborted(server: ServerProcess) -> None:
    """Requests still queued behind others (no token yet) are aborted too."""
    before = server.wait_idle()
    many = {**LONG, "n": 40, "max_tokens": 400, "stream": True}  # 40 sequences > 32 running slots
    with server.client.stream("POST", "/v1/completions", json=many) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()  # keep it: a dropped reader closes the response
        next(line for line in lines if line.startswith("data: "))
        m = server.metrics()
        assert m["neutrino_num_requests_waiting"] > 0, {k: v for k, v in m.items() if "requests" in k or "kv" in k}
    after = server.wait_idle(timeout=5)
    assert after[ABORTED] - before[ABORTED] == 1
