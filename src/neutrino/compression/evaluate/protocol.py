"""The protocol's fixed settings, importable without torch (the CLI shows them in --help)."""

from __future__ import annotations

from collections.abc import Sequence

from neutrino.errors import InvalidParameterError

TASKS = ("ppl-lee", "ppl-wiki", "polarity", "speed")
PPL_TASKS = {"ppl-lee": "lee", "ppl-wiki": "wiki"}  # task -> text name in EvalResult.perplexity

DEFAULT_WINDOW = 512  # tokens fed per forward pass
DEFAULT_STRIDE = 256  # new tokens scored per window after the first
DEFAULT_MAX_TOKENS = 8192  # tokens taken from each text (in segments) unless the whole text is asked for
SEGMENT_LEN = 2048  # a cap is split into ceil(max_tokens / SEGMENT_LEN) evenly spaced segments

POLARITY_TEMPLATE = "Review: {text}\nSentiment:"
LABEL_CONTINUATIONS = {"negative": " negative", "positive": " positive"}  # first label wins a tie

DEFAULT_PREFILL_LEN = 512
DEFAULT_DECODE_PROMPT_LEN = 128
DEFAULT_DECODE_LEN = 64
DEFAULT_REPEATS = 3


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """Task names from "a,b" or a list, in canonical order; raises InvalidParameterError on unknown ones."""
    if tasks is None:
        return list(TASKS)
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise InvalidParameterError("tasks", f"unknown task(s) {unknown or names!r}; expected a comma-separated "
                                    f"subset of {', '.join(TASKS)}")
    return [t for t in TASKS if t in names]
