"""GET /v1/models, GET /health, GET /metrics, POST /tokenize, POST /detokenize."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from neutrino.errors import InvalidParameterError
from neutrino.server.body import check_model, read_body
from neutrino.server.errors import error_response
from neutrino.server.protocol import DetokenizeRequest, TokenizeRequest
from neutrino.server.sampling import render_chat
from neutrino.server.state import ServerContext, get_ctx

router = APIRouter()
_STARTED = int(time.time())


def _model_card(ctx: ServerContext) -> dict[str, Any]:
    return {"id": ctx.settings.served_model_name, "object": "model", "created": _STARTED, "owned_by": "neutrino",
            "root": ctx.llm.info.model_path, "max_model_len": ctx.llm.max_model_len}


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model_card(get_ctx(request))]})


@router.get("/v1/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> Response:
    ctx = get_ctx(request)
    check_model(ctx, model)
    return JSONResponse(_model_card(ctx))


@router.get("/health")
async def health(request: Request) -> Response:
    ctx = get_ctx(request)
    if not ctx.llm.is_running:
        return error_response(503, "the engine is not running", "service_unavailable", code="unavailable",
                              headers={"Retry-After": str(ctx.settings.retry_after_s)})
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx = get_ctx(request)
    text = ctx.metrics.render(ctx.llm.stats(), ctx.in_flight, ctx.draining)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    ctx = get_ctx(request)
    req = await read_body(request, TokenizeRequest)
    check_model(ctx, req.model)
    if (req.prompt is None) == (req.messages is None):
        raise InvalidParameterError("prompt", "give exactly one of 'prompt' and 'messages'")
    if req.messages is not None:
        ids = render_chat(ctx.llm, req.messages, req.add_generation_prompt)
    elif req.add_special_tokens:
        ids = ctx.llm.tokenize(req.prompt or "")
    else:
        ids = list(ctx.llm.tokenizer(req.prompt, add_special_tokens=False)["input_ids"])
    return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len": ctx.llm.max_model_len})


@router.post("/detokenize")
async def detokenize(request: Request) -> Response:
    ctx = get_ctx(request)
    req = await read_body(request, DetokenizeRequest)
    check_model(ctx, req.model)
    vocab = ctx.llm.vocab_size
    bad = [t for t in req.tokens if not 0 <= t < vocab]
    if bad:
        raise InvalidParameterError("tokens", f"token ids must be in [0, {vocab}), got {bad[:5]}")
    return JSONResponse({"prompt": ctx.llm.tokenizer.decode(req.tokens)})
