"""Typed errors raised at Neutrino's boundaries (API, CLI, config, checkpoint)."""


class NeutrinoError(Exception):
    """Base class of every error Neutrino raises on purpose."""


class InvalidParameterError(NeutrinoError, ValueError):
    """A user-supplied parameter has a bad value; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"invalid {param!r}: {message}")
        self.param = param


class ConfigError(NeutrinoError, ValueError):
    """A model or engine configuration cannot be used."""


class CheckpointError(NeutrinoError, ValueError):
    """A checkpoint file or tensor does not fit what the model expects."""


class RequestRejectedError(NeutrinoError, ValueError):
    """A request can never be served (for example its prompt can never fit in the KV cache)."""


class QueueFullError(NeutrinoError):
    """The server's request queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailableError(NeutrinoError):
    """The engine does not take requests now (shutting down, or its loop stopped after a failure)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineStepError(NeutrinoError):
    """An engine step failed; the requests in flight in that step were ended with this error."""
