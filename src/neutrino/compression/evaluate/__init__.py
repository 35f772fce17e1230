"""Evaluation of (compressed) models on a fixed protocol; see `perplexity` and the README's
"Evaluation" section. Import from here: `evaluate_model`, `EvalResult`, `write_report`
(the `perplexity` function lives in the `perplexity` module of the same name).

Names are loaded lazily, so that importing `protocol` (constants, task parsing) does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalLimits": "api", "build_eval_llm": "api", "evaluate_model": "api",
    "PerplexityResult": "perplexity", "plan_windows": "perplexity",
    "pareto_front": "report", "write_report": "report",
    "TASKS": "protocol", "parse_tasks": "protocol",
    "EvalResult": "result", "load_json": "result", "save_json": "result",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
