"""Pure ASGI middleware (no BaseHTTPMiddleware: it would hide client disconnects from the routes).

`RequestContextMiddleware` (outermost): request id in and out (X-Request-Id), access log, HTTP metrics,
in-flight count, 503 while draining, and a last-resort JSON 500. `AuthMiddleware`: Bearer API keys.
`BodyLimitMiddleware`: 413 for bodies over the limit."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neutrino.server.errors import BodyTooLargeError, error_body
from neutrino.server.logs import request_id_var
from neutrino.server.state import ServerContext

logger = logging.getLogger("neutrino.server.access")
OPEN_PATHS = ("/health", "/metrics")  # no API key needed
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ROUTES = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/tokenize",
           "/detokenize"}


async def send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Request id, access log, metrics, drain and last-resort error handling for every HTTP request."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = _header(scope, b"x-request-id")
        rid = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = time.monotonic()
        status = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id, status)
        finally:
            path = scope.get("path", "")
            route = path if path in _ROUTES else "other"
            self.ctx.metrics.observe_http(route, status[0])
            logger.info("%s %s %d", scope.get("method"), path, status[0], extra={
                "method": scope.get("method"), "path": path, "status": status[0],
                "duration_ms": round((time.monotonic() - started) * 1000, 2)})
            request_id_var.reset(token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, status: list[int]) -> None:
        if self.ctx.draining and scope.get("path") != "/metrics":
            retry = {"Retry-After": str(self.ctx.settings.retry_after_s)}
            return await send_json(send, 503, error_body("the server is shutting down", "service_unavailable",
                                                         code="unavailable"), retry)
        self.ctx.in_flight += 1
        try:
            await self.app(scope, receive, send)
        except Exception:
            logger.exception("unhandled error in %s", scope.get("path"))
            if status[0] == 0:
                await send_json(send, 500, error_body("internal server error; see the server log for this "
                                                      "request id", "server_error"))
        finally:
            self.ctx.in_flight -= 1


class AuthMiddleware:
    """`Authorization: Bearer <key>` against the configured keys; /health and /metrics stay open."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app, self.keys = app, tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        auth = _header(scope, b"authorization") or ""
        scheme, _, key = auth.partition(" ")
        given = key.strip().encode("latin-1")
        if scheme.lower() == "bearer" and any(hmac.compare_digest(given, k) for k in self.keys):
            return await self.app(scope, receive, send)
        message = "missing API key: send 'Authorization: Bearer <key>'" if not auth else "invalid API key"
        await send_json(send, 401, error_body(message, "invalid_request_error", code="invalid_api_key"),
                        {"WWW-Authenticate": "Bearer"})


class BodyLimitMiddleware:
    """413 when Content-Length says the body is too large; a chunked body that grows past the limit
    makes reading it raise BodyTooLargeError (answered as 413 by the error handlers)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            err = BodyTooLargeError(self.limit)
            return await send_json(send, 413, error_body(err.message, err.type, code=err.code))
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLargeError(self.limit)
            return message

        await self.app(scope, limited_receive, send)
