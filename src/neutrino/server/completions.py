"""POST /v1/completions (legacy text completions), streamed or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from neutrino.engine.request_stream import RequestStream
from neutrino.outputs import CompletionOutput, RequestOutput
from neutrino.server.body import check_model, read_body
from neutrino.server.errors import error_body, to_api_error
from neutrino.server.logprobs import completion_logprobs
from neutrino.server.protocol import CompletionRequest
from neutrino.server.sampling import completion_params, completion_prompts
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
    """What the response builders need to know about one /v1/completions call."""

    def __init__(self, ctx: ServerContext, req: CompletionRequest, prompts: list[str | list[int]],
                 streams: list[RequestStream]) -> None:
        self.ctx, self.req, self.prompts, self.streams = ctx, req, prompts, streams
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.n = 1 if req.n is None else req.n
        self.echo_text = [self._prompt_text(p) for p in prompts] if req.echo else None

    def _prompt_text(self, prompt: str | list[int]) -> str:
        return prompt if isinstance(prompt, str) else str(self.ctx.llm.tokenizer.decode(prompt))

    def usage(self, finals: Sequence[RequestOutput | None]) -> dict[str, int]:
        prompt = sum(len(s.prompt_token_ids) for s in self.streams)
        completion = sum(f.num_generated_tokens for f in finals if f is not None)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def choice(self, prompt_index: int, out: CompletionOutput) -> dict[str, Any]:
        text = (self.echo_text[prompt_index] if self.echo_text else "") + out.text
        logprobs = None
        if out.logprobs is not None:
            logprobs = completion_logprobs(out.logprobs, self.ctx.token_text, 0)
        return {"index": prompt_index * self.n + out.index, "text": text, "logprobs": logprobs,
                "finish_reason": out.finish_reason, "stop_reason": out.stop_reason}

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                                "model": self.ctx.settings.served_model_name, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body


@router.post("/v1/completions")
async def create_completion(request: Request) -> Response:
    ctx = get_ctx(request)
    req = await read_body(request, CompletionRequest)
    check_model(ctx, req.model)
    params = completion_params(req, ctx.llm.vocab_size)
    prompts = completion_prompts(req.prompt)
    job = _Job(ctx, req, prompts, [])
    job.streams = start_streams(ctx.llm, prompts, params, job.id)
    if req.stream:
        return SSEResponse(_events(job), on_close=lambda: close_all(job.streams))
    try:
        finals = await cancel_on_disconnect(request, collect(job.streams))
    finally:
        close_all(job.streams)
    if finals is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    choices = [job.choice(i, out) for i, final in enumerate(finals) for out in final.outputs]
    return JSONResponse(job.chunk(sorted(choices, key=lambda c: c["index"]), job.usage(finals)))


async def _events(job: _Job) -> AsyncIterator[bytes]:
    """SSE chunks: text deltas per choice, a last chunk per choice with its finish reason, optional usage."""
    finals: list[RequestOutput | None] = [None] * len(job.streams)
    offsets: dict[int, int] = {}  # choice index -> text offset (logprobs)
    done: set[int] = set()
    opts = job.req.stream_options
    try:
        async for prompt_index, out in merge(job.streams):
            if out.finished:
                finals[prompt_index] = out
            choices = [c for o in out.outputs if (c := _delta(job, prompt_index, o, offsets, done))]
            if choices:
                yield sse(job.chunk(choices))
        if opts is not None and opts.include_usage:
            yield sse(job.chunk([], job.usage(finals)))
    except Exception as exc:  # an engine failure mid-stream: tell the client in-band
        err = to_api_error(exc)
        yield sse(error_body(err.message, err.type, err.param, err.code))
    yield sse("[DONE]")


def _delta(job: _Job, prompt_index: int, out: CompletionOutput, offsets: dict[int, int],
           done: set[int]) -> dict[str, Any] | None:
    index = prompt_index * job.n + out.index
    if index in done:
        return None
    first = index not in offsets
    text = (job.echo_text[prompt_index] if job.echo_text and first else "") + out.delta_text
    offsets.setdefault(index, 0)
    logprobs = None
    if out.logprobs is not None and out.delta_token_ids:
        entries = out.logprobs[-len(out.delta_token_ids):]
        logprobs = completion_logprobs(entries, job.ctx.token_text, offsets[index])
    offsets[index] += len(out.delta_text)
    if out.finished:
        done.add(index)
    elif not text and logprobs is None:
        return None
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": out.finish_reason,
            "stop_reason": out.stop_reason}
