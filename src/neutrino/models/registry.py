"""Registry of model classes by HF architecture name."""

from __future__ import annotations

from neutrino.registry import Registry

MODELS: Registry[type] = Registry("model architecture")


def get_model_class(architecture: str) -> type:
    """The CausalLM class implementing `architecture` (importing the model files registers them)."""
    import neutrino.models.gpt2  # noqa: F401
    import neutrino.models.llama  # noqa: F401

    return MODELS.get(architecture)
