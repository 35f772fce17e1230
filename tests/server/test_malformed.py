"""Malformed requests sent with a raw HTTP client: each gets its 4xx in OpenAI's error shape (never a
500, never a stack trace), and the server then still answers a normal request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from conftest import ServerProcess

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def assert_error(resp: httpx.Response, status: int, param: str | None = None, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    for word in words:
        assert word in err["message"], err
    return err


def assert_still_serving(server: ServerProcess) -> None:
    resp = server.post(COMPLETIONS, {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] >= 1


RAW_BODIES = [
    pytest.param(b'{"prompt": "hi", ', None, "JSON", id="truncated-json"),
    pytest.param(b"\xff\xfe\x00garbage", None, "UTF-8", id="non-utf8"),
    pytest.param(b'{"prompt": "caf\xe9"}', None, "UTF-8", id="latin1-in-json"),
    pytest.param(b"", None, "empty", id="empty-body"),
    pytest.param(b"[1, 2, 3]", None, "object", id="array-body"),
    pytest.param(b'{"prompt": "\\ud800"}', None, "JSON", id="lone-surrogate"),
    pytest.param(b"[" * 5000 + b"]" * 5000, None, "JSON", id="deep-nesting"),
    pytest.param(b'{"prompt": "hi", "temperature": NaN}', "temperature", "", id="nan"),
    pytest.param(b'{"prompt": "hi", "temperature": 1e999}', "temperature", "", id="infinite"),
]


@pytest.mark.parametrize(("raw", "param", "word"), RAW_BODIES)
def test_raw_bodies(server: ServerProcess, raw: bytes, param: str | None, word: str) -> None:
    resp = server.client.post(COMPLETIONS, content=raw, headers={"Content-Type": "application/json"})
    assert_error(resp, 400, param, word)
    assert_still_serving(server)


COMPLETION_BODIES = [
    ({"prompt": 5}, "prompt", ""),
    ({}, "prompt", "missing"),
    ({"prompt": "hi", "max_tokens": "5"}, "max_tokens", "integer"),
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens", ">= 1"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens", ""),
    ({"prompt": "hi", "max_tokens": 10**30}, "prompt", "1024"),
    ({"prompt": "hi", "temperature": -0.5}, "temperature", ""),
    ({"prompt": "hi", "temperature": True}, "temperature", ""),
    ({"prompt": "hi", "top_p": 0}, "top_p", ""),
    ({"prompt": "hi", "top_k": -5}, "top_k", ""),
    ({"prompt": "hi", "n": 10**9}, "n", ""),
    ({"prompt": "hi", "n": 0}, "n", ""),
    ({"prompt": "hi", "best_of": 3}, "best_of", ""),
    ({"prompt": "hi", "logprobs": 50}, "logprobs", ""),
    ({"prompt": "hi", "seed": 2**70}, "seed", ""),
    ({"prompt": "hi", "presence_penalty": 9}, "presence_penalty", ""),
    ({"prompt": "hi", "stop": [""]}, "stop", ""),
    ({"prompt": "hi", "stop": [1, 2]}, "stop", ""),
    ({"prompt": "hi", "logit_bias": {"abc": 1}}, "logit_bias", "abc"),
    ({"prompt": "hi", "logit_bias": {"99999999": 1}}, "logit_bias", "99999999"),
    ({"prompt": "hi", "logit_bias": {"5": 500}}, "logit_bias", ""),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options", ""),
    ({"prompt": "hi", "stream": True, "stream_options": {"bogus": 1}}, "stream_options.bogus", "bogus"),
    ({"prompt": "hi", "unknown_field": 1}, "unknown_field", "Unrecognized request argument supplied"),
    ({"prompt": "hi", "suffix": "x"}, "suffix", ""),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": []}, "prompt", "empty"),
    ({"prompt": [[]]}, "prompt", "empty"),
    ({"prompt": [1, 99999999]}, "prompt", "99999999"),
    ({"prompt": [-1]}, "prompt", "-1"),
    ({"prompt": [5] * 1500, "max_tokens": 1}, "prompt", "1500"),
    ({"prompt": [5] * 1000, "max_tokens": 50}, "prompt", "1024"),
    ({"prompt": "hi", "user": 7}, "user", ""),
    ({"model": 3, "prompt": "hi"}, "model", ""),
]


@pytest.mark.parametrize(("body", "param", "word"), COMPLETION_BODIES, ids=lambda v: json.dumps(v)[:40])
def test_bad_completion_bodies(server: ServerProcess, body: dict[str, Any], param: str, word: str) -> None:
    variants = [body] if "stream_options" in body else [body, {**body, "stream": True}]
    for variant in variants:  # a streamed request fails the same way, before any event is sent
        assert_error(server.post(COMPLETIONS, variant), 400, param, word)
    assert_still_serving(server)


CHAT_BODIES = [
    ({"messages": []}, "messages", ""),
    ({"messages": "hi"}, "messages", ""),
    ({}, "messages", "missing"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", ""),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "missing"),
    ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages[0].extra", ""),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]", "text"),
    ({"messages": USER, "response_format": {"type": "json_object"}}, "response_format", ""),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", ""),
    ({"messages": USER, "tool_choice": "required"}, "tool_choice", ""),
    ({"messages": USER, "top_logprobs": 3}, "top_logprobs", "logprobs"),
    ({"messages": USER, "logprobs": True, "top_logprobs": 50}, "logprobs", ""),
    ({"messages": USER, "max_completion_tokens": -3}, "max_tokens", ""),
    ({"messages": USER, "n": 10**6}, "n", ""),
    ({"messages": [{"role": "user", "content": "word " * 1200}]}, "prompt", "1024"),
]


@pytest.mark.parametrize(("body", "param", "word"), CHAT_BODIES, ids=lambda v: json.dumps(v)[:40])
def test_bad_chat_bodies(server: ServerProcess, body: dict[str, Any], param: str, word: str) -> None:
    assert_error(server.post(CHAT, body), 400, param, word)
    assert_still_serving(server)


ODD_BUT_VALID = [
    {"prompt": "hi", "top_k": 2**70},  # no filter: must not overflow the sampler
    {"prompt": "hi", "temperature": 1e308},
    {"prompt": "hi", "top_p": 1e-300, "min_p": 1.0},
    {"prompt": "hi", "repetition_penalty": 1e-300},
    {"prompt": "hi", "stop_token_ids": [2**70]},
    {"prompt": "hi", "seed": -(2**63)},
    {"prompt": "hi", "stop": ["x"] * 500},
    {"prompt": "\u0000\u0001 <|im_end|>", "skip_special_tokens": False},
    {"prompt": "hi", "logprobs": 20, "n": 4, "echo": False},
    {"prompt": [0]},
    {"prompt": "hi", "echo": True},
]


@pytest.mark.parametrize("body", ODD_BUT_VALID, ids=lambda v: json.dumps(v)[:40])
def test_odd_but_valid_bodies(server: ServerProcess, body: dict[str, Any]) -> None:
    resp = server.post(COMPLETIONS, {"max_tokens": 3, **body})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["choices"]) == body.get("n", 1)


def test_oversized_body_is_413(server: ServerProcess) -> None:
    big = {"prompt": "x" * (2 * 1024 * 1024)}
    assert_error(server.post(COMPLETIONS, big), 413)

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    assert_error(server.client.post(COMPLETIONS, content=chunks()), 413)
    assert_still_serving(server)


def test_routes_and_methods(server: ServerProcess) -> None:
    assert_error(server.get("/v1/nothing-here"), 404)
    assert_error(server.get(COMPLETIONS), 405)
    assert_error(server.post("/tokenize", {"prompt": "a", "messages": USER}), 400, "prompt")
    assert_error(server.post("/detokenize", {"tokens": [-4]}), 400, "tokens")
    assert_error(server.post("/detokenize", {"tokens": "abc"}), 400, "tokens")
    assert_still_serving(server)


def test_auth(server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdC1rZXk="}):
        resp = httpx.post(server.base_url + COMPLETIONS, json={"prompt": "hi"}, headers=headers)
        assert_error(resp, 401)
        assert resp.json()["error"]["code"] == "invalid_api_key"
    for path in ("/health", "/metrics"):  # open without a key
        assert httpx.get(server.base_url + path).status_code == 200
    assert_still_serving(server)


def test_request_id_header(server: ServerProcess) -> None:
    resp = server.post(COMPLETIONS, {"prompt": "Hello", "max_tokens": 1}, headers={"X-Request-Id": "my-id-123"})
    assert resp.headers["x-request-id"] == "my-id-123"
    generated = server.post(COMPLETIONS, {"prompt": 5})
    assert len(generated.headers["x-request-id"]) == 32
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("request_id") == "my-id-123"]
    assert mine and any(entry.get("status") == 200 for entry in mine)
    assert all({"ts", "level", "logger", "request_id", "msg"} <= set(entry) for entry in lines)
