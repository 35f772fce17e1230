"""The FastAPI application: `build_app(async_llm, settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from neutrino.engine.async_llm import AsyncLLM
from neutrino.server import chat, completions, misc
from neutrino.server.errors import install_error_handlers
from neutrino.server.middleware import AuthMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from neutrino.server.settings import ServerSettings
from neutrino.server.state import ServerContext


def build_app(llm: AsyncLLM, settings: ServerSettings) -> FastAPI:
    """An app serving `llm`; its lifespan starts the engine thread and stops it at shutdown."""
    ctx = ServerContext(llm, settings)
    llm.add_finish_listener(ctx.metrics.observe_request)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        llm.start()
        try:
            yield
        finally:
            llm.shutdown()

    app = FastAPI(title="Neutrino", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    install_error_handlers(app, settings.retry_after_s)
    for module in (completions, chat, misc):
        app.include_router(module.router)
    # added last = outermost: context (ids, logs, drain, last-resort 500) -> auth -> body limit -> routes
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, keys=settings.api_keys)
    app.add_middleware(RequestContextMiddleware, ctx=ctx)
    return app
