"""`evaluate_model`: run the evaluation tasks on one model through the engine and return an EvalResult."""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from neutrino.compression.evaluate import datasets
from neutrino.compression.evaluate.accuracy import zero_shot_accuracy
from neutrino.compression.evaluate.footprint import footprint
from neutrino.compression.evaluate.held_out import calibration_of, held_out_labels
from neutrino.compression.evaluate.perplexity import check_window, perplexity, text_token_ids
from neutrino.compression.evaluate.protocol import (
    DEFAULT_DECODE_LEN,
    DEFAULT_DECODE_PROMPT_LEN,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PREFILL_LEN,
    DEFAULT_STRIDE,
    DEFAULT_WINDOW,
    LABEL_CONTINUATIONS,
    POLARITY_TEMPLATE,
    PPL_TASKS,
    SEGMENT_LEN,
    parse_tasks,
)
from neutrino.compression.evaluate.result import EvalResult
from neutrino.compression.evaluate.speed import measure_speed
from neutrino.errors import InvalidParameterError

logger = logging.getLogger(__name__)
_BLOCK_SIZE = 16


@dataclass(frozen=True)
class EvalLimits:
    """Protocol settings: perplexity window/stride and tokens per text (None = whole text), polarity examples
    (None = all 200), speed prompt lengths."""

    window: int = DEFAULT_WINDOW
    stride: int = DEFAULT_STRIDE
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    max_examples: int | None = None
    prefill_len: int = DEFAULT_PREFILL_LEN
    decode_prompt_len: int = DEFAULT_DECODE_PROMPT_LEN
    decode_len: int = DEFAULT_DECODE_LEN

    def validate(self) -> None:
        check_window(self.window, self.stride)
        for name, low in (("max_tokens", 2), ("max_examples", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise InvalidParameterError(name, f"expected an integer >= {low} or None (all), got {value!r}")


def build_eval_llm(model: str | os.PathLike[str] | None, dtype: str = "auto", device: str = "auto",
                   limits: EvalLimits | None = None, num_threads: int | None = None) -> Any:
    """An LLM for evaluation: prefix caching off and a KV cache just large enough for the speed runs
    (perplexity and accuracy score in private caches)."""
    from neutrino.engine.llm import LLM

    limits = limits or EvalLimits()
    tokens = max(limits.prefill_len + 1, limits.decode_prompt_len + limits.decode_len)
    num_blocks = -(-tokens // _BLOCK_SIZE) + 4
    return LLM(model=None if model is None else str(model), dtype=dtype, device=device, num_blocks=num_blocks,
               block_size=_BLOCK_SIZE, enable_prefix_caching=False, num_threads=num_threads)


def evaluate_model(
    model: Any = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    tasks: str | Sequence[str] | None = None,
    limits: EvalLimits | None = None,
    name: str | None = None,
    progress: bool = True,
    num_threads: int | None = None,
) -> EvalResult:
    """Evaluate `model` (a checkpoint path, None for the embedded default, or a built `neutrino.LLM`)
    on `tasks` (default all: ppl-lee, ppl-wiki, polarity, speed); the footprint is always measured."""
    limits = limits or EvalLimits()
    limits.validate()
    task_list = parse_tasks(tasks)
    start = time.perf_counter()
    llm = model if hasattr(model, "engine") else build_eval_llm(model, dtype, device, limits, num_threads)
    engine = llm.engine
    if limits.window > engine.max_model_len and any(t in PPL_TASKS for t in task_list):
        raise InvalidParameterError("window", f"{limits.window} exceeds the model's max_model_len "
                                    f"{engine.max_model_len}")
    result = EvalResult(
        name=name or engine.resolved.name, model=str(engine.resolved.path), dtype=str(engine.dtype).split(".")[-1],
        device=str(engine.device), tasks=task_list,
        footprint=footprint(engine.resolved.path, engine.runner.model),
        protocol=_protocol(limits), meta=_meta(),
    )
    result.timings_s["load"] = time.perf_counter() - start
    texts = [PPL_TASKS[t] for t in task_list if t in PPL_TASKS]
    result.held_out = held_out_labels(calibration_of(engine.resolved.path), texts)
    for task in task_list:
        t0 = time.perf_counter()
        _run_task(task, llm, limits, result, progress)
        result.timings_s[task] = time.perf_counter() - t0
        logger.info("%s: %s done in %.1f s", result.name, task, result.timings_s[task])
    result.timings_s["total"] = time.perf_counter() - start
    return result


def _run_task(task: str, llm: Any, limits: EvalLimits, result: EvalResult, progress: bool) -> None:
    if task in PPL_TASKS:
        text_name = PPL_TASKS[task]
        ids = text_token_ids(llm.tokenizer, _ppl_text(text_name))
        result.perplexity[text_name] = perplexity(llm, ids, limits.window, limits.stride, limits.max_tokens,
                                                  progress, task)
    elif task == "polarity":
        examples = datasets.polarity_examples()[: limits.max_examples]
        result.polarity = zero_shot_accuracy(llm, llm.tokenizer, examples, progress=progress)
    elif task == "speed":
        result.speed = measure_speed(llm, limits.prefill_len, limits.decode_prompt_len, limits.decode_len)


def _ppl_text(text_name: str) -> str:
    return datasets.lee_text() if text_name == "lee" else datasets.wiki_text()


def _protocol(limits: EvalLimits) -> dict[str, Any]:
    return {
        "window": limits.window, "stride": limits.stride, "max_tokens": limits.max_tokens,
        "segment_len": SEGMENT_LEN, "special_tokens": "none added; token 0 of each segment is context only",
        "lee_text": datasets.LEE_FILE, "wiki_text": datasets.WIKI_FILE, "polarity_file": datasets.POLARITY_FILE,
        "polarity_template": POLARITY_TEMPLATE, "polarity_labels": dict(LABEL_CONTINUATIONS),
        "max_examples": limits.max_examples, "prefill_len": limits.prefill_len,
        "decode_prompt_len": limits.decode_prompt_len, "decode_len": limits.decode_len,
    }


def _meta() -> dict[str, str]:
    import torch

    import neutrino

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "neutrino": neutrino.__version__, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
    }
