"""POST /v1/chat/completions: the conversation is rendered with the model's chat template."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from neutrino.engine.request_stream import RequestStream
from neutrino.errors import InvalidParameterError
from neutrino.outputs import CompletionOutput, RequestOutput
from neutrino.server.body import check_model, read_body
from neutrino.server.errors import error_body, to_api_error
from neutrino.server.logprobs import chat_logprobs
from neutrino.server.protocol import ChatCompletionRequest, unsupported_fields
from neutrino.server.sampling import chat_params, render_chat
from neutrino.server.state import ServerContext, get_ctx
from neutrino.server.streaming import (
    SSEResponse,
    cancel_on_disconnect,
    close_all,
    collect,
    merge,
    sse,
    start_streams,
)

router = APIRouter()


class _Job:
    """One /v1/chat/completions call."""

    def __init__(self, ctx: ServerContext, req: ChatCompletionRequest) -> None:
        self.ctx, self.req = ctx, req
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.top_n = req.top_logprobs or 0
        self.stream: RequestStream | None = None

    def usage(self, final: RequestOutput | None) -> dict[str, int]:
        prompt = len(self.stream.prompt_token_ids) if self.stream else 0
        completion = final.num_generated_tokens if final is not None else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def logprobs(self, out: CompletionOutput, entries: list | None = None) -> dict[str, Any] | None:
        if out.logprobs is None:
            return None
        return chat_logprobs(out.logprobs if entries is None else entries, self.ctx.token_text, self.top_n)

    def body(self, obj: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created,
                               "model": self.ctx.settings.served_model_name, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    ctx = get_ctx(request)
    req = await read_body(request, ChatCompletionRequest)
    check_model(ctx, req.model)
    problem = unsupported_fields(req)
    if problem is not None:
        raise InvalidParameterError(*problem)
    prompt = render_chat(ctx.llm, req.messages, req.add_generation_prompt)
    room = max(1, ctx.llm.context_limit - len(prompt))  # no max_tokens: up to what fits
    params = chat_params(req, ctx.llm.vocab_size, default_max_tokens=room)
    job = _Job(ctx, req)
    [job.stream] = start_streams(ctx.llm, [prompt], params, job.id)
    streams = [job.stream]
    if req.stream:
        return SSEResponse(_events(job), on_close=lambda: close_all(streams))
    try:
        finals = await cancel_on_disconnect(request, collect(streams))
    finally:
        close_all(streams)
    if finals is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    choices = [{"index": o.index, "message": {"role": "assistant", "content": o.text, "refusal": None},
                "logprobs": job.logprobs(o), "finish_reason": o.finish_reason, "stop_reason": o.stop_reason}
               for o in finals[0].outputs]
    return JSONResponse(job.body("chat.completion", choices, job.usage(finals[0])))


async def _events(job: _Job) -> AsyncIterator[bytes]:
    """SSE: a role chunk per choice, content deltas, a finish chunk per choice, optional usage."""
    assert job.stream is not None
    n = job.stream.n
    yield sse(job.body("chat.completion.chunk", [
        {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        for i in range(n)]))
    final: RequestOutput | None = None
    done: set[int] = set()
    opts = job.req.stream_options
    try:
        async for _, out in merge([job.stream]):
            final = out if out.finished else final
            choices = [c for o in out.outputs if (c := _delta(job, o, done))]
            if choices:
                yield sse(job.body("chat.completion.chunk", choices))
        if opts is not None and opts.include_usage:
            yield sse(job.body("chat.completion.chunk", [], job.usage(final)))
    except Exception as exc:  # an engine failure mid-stream: tell the client in-band
        err = to_api_error(exc)
        yield sse(error_body(err.message, err.type, err.param, err.code))
    yield sse("[DONE]")


def _delta(job: _Job, out: CompletionOutput, done: set[int]) -> dict[str, Any] | None:
    if out.index in done:
        return None
    logprobs = None
    if out.logprobs is not None and out.delta_token_ids:
        logprobs = job.logprobs(out, out.logprobs[-len(out.delta_token_ids):])
    if out.finished:
        done.add(out.index)
    elif not out.delta_text and logprobs is None:
        return None
    delta = {"content": out.delta_text} if out.delta_text else {}
    return {"index": out.index, "delta": delta, "logprobs": logprobs, "finish_reason": out.finish_reason,
            "stop_reason": out.stop_reason}
