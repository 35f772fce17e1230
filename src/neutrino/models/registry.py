"""Registry of model classes by HF architecture name (filled by the model files on import)."""

from __future__ import annotations

from neutrino.registry import Registry

MODELS: Registry[type] = Registry("model architecture")
