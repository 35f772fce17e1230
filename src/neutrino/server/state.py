"""What the routes and middleware share: the engine, the settings, metrics and the drain flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from neutrino.engine.async_llm import AsyncLLM
from neutrino.server.logprobs import TokenText
from neutrino.server.metrics import ServerMetrics
from neutrino.server.settings import ServerSettings


@dataclass
class ServerContext:
    """One per app (`app.state.ctx`)."""

    llm: AsyncLLM
    settings: ServerSettings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    draining: bool = False
    in_flight: int = 0  # HTTP requests inside the app (drain waits for 0)

    def __post_init__(self) -> None:
        self.token_text = TokenText(self.llm.tokenizer)


def get_ctx(request: Request) -> ServerContext:
    return request.app.state.ctx
