"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status.

Every error a client can cause maps to a 4xx here; pydantic validation errors become 400s naming the
parameter, never a stack trace."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from neutrino.errors import (
    EngineStepError,
    EngineUnavailableError,
    InvalidParameterError,
    QueueFullError,
    RequestRejectedError,
)

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered to the client as-is."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


class BodyTooLargeError(APIError):
    """The request body is over the server's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the server's limit of {limit} bytes",
                         code="request_too_large")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def to_api_error(exc: BaseException, retry_after: int = 1) -> APIError:
    """Map any exception to the APIError the client sees (unknown ones become a 500)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InvalidParameterError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, RequestRejectedError):
        return APIError(400, str(exc), param="prompt", code="context_length_exceeded")
    if isinstance(exc, QueueFullError):
        wait = str(max(retry_after, math.ceil(exc.retry_after)))
        return APIError(429, str(exc), "rate_limit_error", code="queue_full", headers={"Retry-After": wait})
    if isinstance(exc, EngineUnavailableError):
        wait = str(max(retry_after, math.ceil(exc.retry_after)))
        return APIError(503, str(exc), "service_unavailable", code="unavailable", headers={"Retry-After": wait})
    if isinstance(exc, ValidationError):
        return validation_error(exc.errors(include_url=False))
    if isinstance(exc, EngineStepError):
        return APIError(500, str(exc), "server_error", code="engine_error")
    return APIError(500, "internal server error; see the server log for this request id", "server_error")


def validation_error(errors: Any) -> APIError:
    """A 400 naming the first bad parameter of a pydantic error list."""
    errors = list(errors)
    if not errors:
        return APIError(400, "invalid request body")
    err = errors[0]
    kind = err.get("type", "")
    if kind == "json_invalid":
        return APIError(400, f"request body is not valid JSON: {err.get('msg', '')}")
    param = _param_name(err.get("loc", ()))
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        return APIError(400, f"missing required parameter: {param!r}", param=param)
    if kind == "model_attributes_type":
        return APIError(400, "request body must be a JSON object")
    got = _short(err.get("input"))
    if len({_param_name(e.get("loc", ())) for e in errors}) == 1 and len(errors) > 1:  # a union: no member fit
        return APIError(400, f"invalid value for {param!r}: {got} does not match any accepted type", param=param)
    return APIError(400, f"invalid value for {param!r}: {err.get('msg', 'invalid')} (got {got})", param=param)


def _param_name(loc: Any) -> str:
    """('messages', 0, 'content', 'str') -> 'messages[0].content' (union member tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not _is_type_tag(part):
            out += f".{part}" if out else part
    return out or "body"


def _is_type_tag(part: str) -> bool:
    return any(c in part for c in "[]()") or part in {"str", "int", "float", "bool", "list", "dict", "none"}


def _short(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    """Register the handlers that turn exceptions raised in routes into OpenAI error responses."""

    async def api_error(_: Request, exc: Exception) -> Response:
        err = to_api_error(exc, retry_after)
        if err.status >= 500:
            logger.error("request failed: %s", exc, exc_info=exc)
        return error_response(err.status, err.message, err.type, err.param, err.code, err.headers)

    async def request_validation(_: Request, exc: Exception) -> Response:
        err = validation_error(exc.errors() if isinstance(exc, RequestValidationError) else [])
        return error_response(err.status, err.message, err.type, err.param, err.code)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error", code=code,
                              headers=getattr(exc, "headers", None))

    for cls in (APIError, InvalidParameterError, RequestRejectedError, QueueFullError, EngineUnavailableError,
                EngineStepError, ValidationError):
        app.add_exception_handler(cls, api_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
