"""The perplexity protocol: strided windows over token segments, every token of a segment but its
first scored exactly once.

- Tokens: the tokenizer's ids of the whole text with `add_special_tokens=False` (no BOS is prepended).
- Segments (`select_segments`): without a cap, or when the text has at most `max_tokens` tokens, the
  whole stream is one segment. With a cap, S = ceil(max_tokens / SEGMENT_LEN) segments of
  max_tokens // S tokens each are taken, evenly spaced from the start to the end of the stream
  (segment i starts at i * (N - len) // (S - 1)); they never overlap. The default cap of 8,192 gives 4
  segments of 2,048 tokens.
- In each segment, token 0 is context only; tokens 1..L-1 are each scored exactly once, as
  -log p(t_i | the window's tokens before t_i), from the model's float32 logits.
- Windows: the first is tokens [0, window) of the segment and scores [1, window). Each later window
  scores the next `stride` tokens [s, s + stride) (fewer at the end) and feeds [s + stride - window,
  s + stride), so every scored token outside the first window sees at least `window - stride` tokens.
- Perplexity = exp(sum of NLL / number of scored tokens), over all segments; NLL in nats per token.
Each window is one forward pass of a fresh sequence (its own private KV cache, `ModelRunner.score`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from neutrino.compression.evaluate.protocol import DEFAULT_STRIDE, DEFAULT_WINDOW, SEGMENT_LEN
from neutrino.errors import InvalidParameterError


class Scorer(Protocol):
    """Anything with `score(token_ids) -> float32 logits [len, vocab]` (a `ModelRunner`)."""

    def score(self, token_ids: list[int]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Window:
    """One forward pass: tokens [begin, end) are fed, tokens [score_from, end) are scored."""

    begin: int
    end: int
    score_from: int


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one text under the protocol above."""

    ppl: float
    nll: float  # mean negative log-likelihood, nats per scored token
    num_scored: int
    num_windows: int
    num_segments: int
    window: int
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_window(window: int, stride: int) -> None:
    """Raise InvalidParameterError unless 2 <= window and 1 <= stride < window."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise InvalidParameterError("window", f"expected an integer >= 2, got {window!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride < window:
        raise InvalidParameterError("stride", f"expected an integer in [1, window={window}), got {stride!r}")


def plan_windows(num_tokens: int, window: int = DEFAULT_WINDOW, stride: int = DEFAULT_STRIDE) -> list[Window]:
    """The windows of the protocol over one segment of `num_tokens` tokens."""
    check_window(window, stride)
    if num_tokens < 2:
        raise InvalidParameterError("token_ids", f"need at least 2 tokens to score one, got {num_tokens}")
    first_end = min(window, num_tokens)
    windows = [Window(0, first_end, 1)]
    scored_end = first_end
    while scored_end < num_tokens:
        end = min(scored_end + stride, num_tokens)
        windows.append(Window(max(0, end - window), end, scored_end))
        scored_end = end
    return windows


def select_segments(num_tokens: int, max_tokens: int | None, segment_len: int = SEGMENT_LEN) -> list[range]:
    """Token ranges evaluated for a stream of `num_tokens` under a cap (see the module docstring)."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 2):
        raise InvalidParameterError("max_tokens", f"expected an integer >= 2 or None (all), got {max_tokens!r}")
    if max_tokens is None or num_tokens <= max_tokens:
        return [range(0, num_tokens)]
    count = -(-max_tokens // segment_len)
    length = max_tokens // count
    if count == 1:
        return [range(0, length)]
    starts = [i * (num_tokens - length) // (count - 1) for i in range(count)]
    return [range(s, s + length) for s in starts]


def as_scorer(model: Any) -> Scorer:
    """The `ModelRunner` behind an `LLM`, an `LLMEngine`, or a scorer itself."""
    if hasattr(model, "engine"):
        model = model.engine
    if hasattr(model, "runner"):
        model = model.runner
    if not callable(getattr(model, "score", None)):
        raise InvalidParameterError("model", f"expected an LLM, LLMEngine or ModelRunner, got {type(model).__name__}")
    return model


def perplexity(
    model: Any,
    token_ids: list[int],
    window: int = DEFAULT_WINDOW,
    stride: int = DEFAULT_STRIDE,
    max_tokens: int | None = None,
    progress: bool = False,
    desc: str = "perplexity",
    segment_len: int = SEGMENT_LEN,
) -> PerplexityResult:
    """Perplexity of `token_ids` under `model` (an LLM, LLMEngine or ModelRunner) by the protocol;
    `max_tokens` None evaluates the whole stream."""
    scorer = as_scorer(model)
    segments = select_segments(len(token_ids), max_tokens, segment_len)
    plan = [(seg, w) for seg in segments for w in plan_windows(len(seg), window, stride)]
    max_len = getattr(getattr(model, "engine", model), "max_model_len", None)
    if isinstance(max_len, int) and window > max_len and max(len(s) for s in segments) > max_len:
        raise InvalidParameterError("window", f"{window} exceeds the model's max_model_len {max_len}")
    total, count = 0.0, 0
    for seg, w in _progress(plan, progress, desc):
        total += window_nll(scorer, token_ids[seg.start : seg.stop], w)
        count += w.end - w.score_from
    nll = total / count
    return PerplexityResult(math.exp(nll), nll, count, len(plan), len(segments), window, stride)


def window_nll(scorer: Scorer, token_ids: list[int], w: Window) -> float:
    """Sum of -log p over the scored tokens of one window of `token_ids`."""
    logits = scorer.score(token_ids[w.begin : w.end])  # [end - begin, vocab] float32
    rows = logits[w.score_from - 1 - w.begin : w.end - 1 - w.begin].float()  # predict score_from..end-1
    targets = torch.tensor(token_ids[w.score_from : w.end], device=rows.device)
    logprobs = torch.log_softmax(rows, dim=-1).gather(1, targets[:, None])  # [n, 1]
    return -float(logprobs.double().sum())


def text_token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of the whole `text`, no special tokens added."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) < 2:
        raise InvalidParameterError("text", f"needs at least 2 tokens for a perplexity, got {len(ids)}")
    return ids


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="win")
