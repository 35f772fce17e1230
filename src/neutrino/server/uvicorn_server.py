"""Running the app under uvicorn with our own signal handling: SIGTERM/SIGINT drain, then exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI

from neutrino.server.state import ServerContext

logger = logging.getLogger("neutrino.server")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM or SIGINT: new requests get 503, requests in flight get up to the grace
    period to finish (then they are aborted), and the server stops. A second SIGINT stops at once."""

    def __init__(self, config: uvicorn.Config, ctx: ServerContext) -> None:
        super().__init__(config)
        self.ctx = ctx
        self._drain_task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                logger.info("listening on http://%s:%d", host, port, extra={"port": port})

    def _on_signal(self, sig: int) -> None:
        if self.ctx.draining:
            if sig == signal.SIGINT:
                self.force_exit = self.should_exit = True
            return
        logger.info("received %s: draining for up to %.1f s", signal.Signals(sig).name,
                    self.ctx.settings.shutdown_grace_s)
        self.ctx.draining = True
        self.ctx.llm.stop_accepting()
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.ctx.settings.shutdown_grace_s
        while self.ctx.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.ctx.in_flight > 0:
            logger.warning("grace period over: aborting %d requests", self.ctx.llm.num_requests)
            self.ctx.llm.abort_all()
        self.should_exit = True


async def serve(app: FastAPI) -> None:
    """Serve until drained; returns normally (exit status 0)."""
    ctx: ServerContext = app.state.ctx
    config = uvicorn.Config(app, host=ctx.settings.host, port=ctx.settings.port, log_config=None,
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5, server_header=False)
    await DrainingServer(config, ctx).serve()
