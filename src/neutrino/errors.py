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
