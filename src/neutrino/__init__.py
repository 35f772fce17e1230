"""Neutrino: an LLM inference engine and compression toolkit for CPU and CUDA."""

from neutrino.errors import (
    CheckpointError,
    ConfigError,
    InvalidParameterError,
    NeutrinoError,
    RequestRejectedError,
)
from neutrino.sampling_params import SamplingParams

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InvalidParameterError",
    "LLM",
    "NeutrinoError",
    "RequestRejectedError",
    "SamplingParams",
    "__version__",
]


def __getattr__(name: str):  # lazy: importing neutrino must not import torch models eagerly
    if name == "LLM":
        from neutrino.engine.llm import LLM

        return LLM
    raise AttributeError(name)
