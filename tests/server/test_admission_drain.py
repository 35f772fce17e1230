"""Admission control (429 + Retry-After when the queue is full) and SIGTERM draining (503 for new
requests, in-flight ones finish, exit status 0), on a server with one running slot and one queue slot.

The drain test stops this module's server, so it comes last."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ServerProcess, launch

FLAGS = ("--num-blocks", "80", "--max-num-seqs", "1", "--max-queued-requests", "1", "--shutdown-grace", "30")
LONG = {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def small(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"NEUTRINO_SERVED_MODEL_NAME": "tiny-alias"}  # an option read from the environment
    srv = launch(tiny_model, tmp_path_factory.mktemp("small") / "server.log", *FLAGS, api_key=None, env=env)
    yield srv
    srv.stop(signal.SIGKILL)


def test_model_name_from_environment(small: ServerProcess) -> None:
    assert small.get("/v1/models").json()["data"][0]["id"] == "tiny-alias"
    resp = small.post("/v1/completions", {"model": "tiny-alias", "prompt": "Hi", "max_tokens": 1})
    assert resp.status_code == 200, resp.text


def test_queue_full_is_429_with_retry_after(small: ServerProcess) -> None:
    with contextlib.ExitStack() as stack:
        for _ in range(2):  # one running, one waiting: the queue is full
            resp = stack.enter_context(small.client.stream("POST", "/v1/completions", json=LONG))
            assert resp.status_code == 200
        full = small.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1})
        assert full.status_code == 429, full.text
        assert int(full.headers["retry-after"]) >= 1
        assert full.json()["error"]["type"] == "rate_limit_error"
    small.wait_idle()
    too_many = small.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1, "n": 3})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    assert small.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1}).status_code == 200


def test_sigterm_drains_then_exits_0(small: ServerProcess) -> None:
    with small.client.stream("POST", "/v1/completions", json=LONG) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        small.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        refused = httpx.post(small.base_url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert httpx.get(small.base_url + "/health").status_code == 503
        events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert small.proc.wait(timeout=30) == 0
    assert "draining" in small.log()
