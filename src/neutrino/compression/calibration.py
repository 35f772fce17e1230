"""Calibration batches: `samples` x `seq_len` token ids cut from one text as non-overlapping windows.

The text is a file the user gives (UTF-8, tokenized whole) or, by default, gensim's bundled
`lee_background.cor` (real news text; lines stripped and joined as the evaluation does). The evaluation
protocol scores a few segments of that same text, so default calibration windows are cut only from
the spans between those segments: calibration never sees the evaluated tokens (unless more windows are
asked for than those spans hold; then the whole text is used and `describe()` says so). No special
tokens are added. Too little text is an error that states the tokens needed and available."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neutrino.errors import ConfigError

DEFAULT_CALIB_NAME = "lee_background.cor"
DEFAULT_CALIB_SOURCE = f"gensim:{DEFAULT_CALIB_NAME}"  # the source recorded in recipe.yaml


@dataclass(frozen=True)
class CalibrationData:
    """A calibration batch and where it came from (recorded in recipe.yaml)."""

    input_ids: torch.Tensor  # [samples, seq_len] int64
    source: str
    excluded: list[tuple[int, int]]  # token ranges left out (the evaluated segments)
    text_tokens: int

    def describe(self) -> dict[str, Any]:
        n, length = self.input_ids.shape
        return {"source": self.source, "samples": n, "seq_len": length, "tokens_used": n * length,
                "text_tokens": self.text_tokens, "excluded_eval_ranges": [list(r) for r in self.excluded]}


def read_calibration_text(file: str | os.PathLike[str] | None) -> tuple[str, str, bool]:
    """(text, source name, whether the evaluated segments must be left out) for `file` or the default."""
    if file is None:
        from neutrino.compression.evaluate.datasets import lee_text

        return lee_text(), DEFAULT_CALIB_SOURCE, True
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"calibration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"calibration file {str(path)!r} cannot be read as UTF-8 text ({e})") from e
    if not text.strip():
        raise ConfigError(f"calibration file {str(path)!r} is empty")
    return text, str(path), False


def eval_segments(num_tokens: int) -> list[tuple[int, int]]:
    """Token ranges the default perplexity protocol scores in a text of `num_tokens` tokens."""
    from neutrino.compression.evaluate.perplexity import select_segments
    from neutrino.compression.evaluate.protocol import DEFAULT_MAX_TOKENS

    return [(r.start, r.stop) for r in select_segments(num_tokens, DEFAULT_MAX_TOKENS)]


def windows(num_tokens: int, excluded: list[tuple[int, int]], seq_len: int) -> list[int]:
    """Start offsets of consecutive `seq_len` windows inside the spans not `excluded`."""
    starts, pos = [], 0
    for begin, end in sorted(excluded) + [(num_tokens, num_tokens)]:
        starts += range(pos, begin - seq_len + 1, seq_len)
        pos = max(pos, end)
    return starts


def calibration_batch(tokenizer: Any, samples: int, seq_len: int,
                      file: str | os.PathLike[str] | None = None) -> CalibrationData:
    """`samples` non-overlapping windows of `seq_len` tokens from the calibration text."""
    text, source, hold_out = read_calibration_text(file)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    excluded = eval_segments(len(ids)) if hold_out else []
    starts = windows(len(ids), excluded, seq_len)
    if len(starts) < samples and excluded:
        excluded, starts = [], windows(len(ids), [], seq_len)  # more than the held-out spans hold
    if len(starts) < samples:
        raise ConfigError(
            f"calibration text {source} is too short: {samples} samples x {seq_len} tokens need "
            f"{samples * seq_len} tokens, it has {len(ids)} ({len(starts)} windows of {seq_len}); give "
            "fewer or shorter samples (--calib-samples, --calib-len) or a longer --calib-file"
        )
    batch = torch.tensor([ids[s : s + seq_len] for s in starts[:samples]], dtype=torch.long)
    return CalibrationData(batch, source, excluded, len(ids))
