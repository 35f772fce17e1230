"""Server options (CLI flags and NEUTRINO_* environment variables map onto these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    """How the HTTP server behaves; the engine's options live in EngineArgs."""

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str = "neutrino"
    model_aliases: tuple[str, ...] = ()  # other names accepted in the `model` field (e.g. the path)
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    max_body_bytes: int = 1024 * 1024
    shutdown_grace_s: float = 30.0  # how long SIGTERM waits for in-flight requests
    retry_after_s: int = 1  # Retry-After for 429 and 503

    def accepts_model(self, name: str | None) -> bool:
        return not name or name == self.served_model_name or name in self.model_aliases
