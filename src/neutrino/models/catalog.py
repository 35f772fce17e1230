"""Every supported model family: importing the model files registers them in MODELS."""

from __future__ import annotations

from neutrino.models import gpt2, llama  # noqa: F401  (registration side effect)
from neutrino.models.base import CausalLM
from neutrino.models.registry import MODELS


def get_model_class(architecture: str) -> type[CausalLM]:
    """The CausalLM class implementing `architecture` (ConfigError listing the supported ones)."""
    cls: type[CausalLM] = MODELS.get(architecture)
    return cls
