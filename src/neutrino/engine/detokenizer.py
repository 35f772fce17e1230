"""Incremental detokenization with stop strings, for streaming one request's output.

Decoding (vLLM's prefix_offset/read_offset algorithm): the ids `[prefix_offset, read_offset)`
have already been turned into text; each step decodes the small window `[prefix_offset, end)`
and emits only what comes after the decoded `[prefix_offset, read_offset)`. While the window's
text ends with U+FFFD (a UTF-8 character split across byte-level BPE tokens) nothing is emitted
and the offsets stay put, so the character comes out whole once its last byte arrives. The
prompt's last few tokens seed the window, so the first output token's leading space is right.

Stop strings: a match can only end inside the newly decoded text, and can only start in the
held-back text before it (see below), so only `held + new` is searched. On a match the output
is cut at the match start (or after the stop string with include_stop_str_in_output). Text
that could still be the beginning of a stop string (the longest suffix of the output that is
a proper prefix of some stop string, at most max_stop_len - 1 characters) is held back from
the deltas until it is clear; `flush()` releases it when the request finishes otherwise.

Each `update` costs O(new tokens + window + stop lengths), independent of the output length.
"""

from __future__ import annotations

from typing import Any

_INITIAL_OFFSET = 5  # prompt tokens used as decoding context
_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns a stream of output token ids into text deltas, watching for stop strings."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        skip_special_tokens: bool = True,
        stop: list[str] | None = None,
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._stop = [s for s in (stop or []) if s]
        self._include_stop = include_stop_str_in_output
        context = list(prompt_token_ids[-(_INITIAL_OFFSET + 2) :])
        self._ids: list[int] = context  # decoding context + output ids
        self._num_context = len(context)
        self._read_offset = len(context)
        self._prefix_offset = max(len(context) - _INITIAL_OFFSET, 0)
        self._emitted: list[str] = []  # text already returned as deltas
        self._held = ""  # decoded text not yet returned (possible stop-string start)
        self._stop_string: str | None = None
        self._text_cache: str | None = ""

    @property
    def token_ids(self) -> list[int]:
        """All output token ids given to `update` so far."""
        return self._ids[self._num_context :]

    @property
    def output_text(self) -> str:
        """The output text so far, including held-back text, cut at a matched stop string.

        Text of a trailing incomplete UTF-8 character is not included until it completes
        (or `flush()` is called).
        """
        if self._text_cache is None:
            self._text_cache = "".join(self._emitted) + self._held
        return self._text_cache

    @property
    def stop_string(self) -> str | None:
        """The stop string that ended the output, if one matched."""
        return self._stop_string

    def update(self, new_token_ids: list[int]) -> tuple[str, str | None]:
        """Add sampled tokens; return (text delta to emit, stop string matched or None).

        After a stop string has matched, further tokens are recorded but produce no text.
        """
        new_text = "".join(self._decode_next(tok) for tok in new_token_ids)
        if self._stop_string is not None or not new_text:
            return "", None
        return self._emit(new_text)

    def flush(self) -> str:
        """Release everything held back (call once when the request finishes); return it.

        Also decodes a trailing incomplete character (as U+FFFD, like `tokenizer.decode`), so
        the concatenation of all deltas equals `output_text`.
        """
        if self._stop_string is not None:
            return ""
        rest = self._decode_rest()
        delta = ""
        if rest:
            delta, _ = self._emit(rest)
        if self._stop_string is None:
            delta += self._held
            self._emitted.append(self._held)
            self._held = ""
            self._text_cache = None
        return delta

    def _decode(self, start: int, end: int) -> str:
        return self._tokenizer.decode(
            self._ids[start:end],
            skip_special_tokens=self._skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )

    def _decode_next(self, token_id: int) -> str:
        """Append one id; return the newly completed text (often the token's text, maybe "")."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        window_text = self._decode(self._prefix_offset, len(self._ids))
        if len(window_text) <= len(prefix_text) or window_text.endswith(_REPLACEMENT_CHAR):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return window_text[len(prefix_text) :]

    def _decode_rest(self) -> str:
        """Text of the ids after read_offset, decoded as they are (may contain U+FFFD)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        window_text = self._decode(self._prefix_offset, len(self._ids))
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return window_text[len(prefix_text) :]

    def _emit(self, new_text: str) -> tuple[str, str | None]:
        """Append decoded text; check stop strings; return (delta, stop string or None)."""
        window = self._held + new_text
        self._text_cache = None
        match = _find_stop(window, self._stop)
        if match is not None:
            start, stop_str = match
            cut = start + len(stop_str) if self._include_stop else start
            self._held = ""
            self._stop_string = stop_str
            self._emitted.append(window[:cut])
            return window[:cut], stop_str
        hold = _stop_prefix_len(window, self._stop)
        delta = window[: len(window) - hold]
        self._held = window[len(window) - hold :]
        self._emitted.append(delta)
        return delta, None


def _find_stop(text: str, stop: list[str]) -> tuple[int, str] | None:
    """The stop string occurrence in `text` that ends first (the longer on a tie): (start, stop)."""
    best: tuple[int, int, str] | None = None  # (end, -length, stop)
    for s in stop:
        idx = text.find(s)
        if idx >= 0:
            cand = (idx + len(s), -len(s), s)
            if best is None or cand < best:
                best = cand
    if best is None:
        return None
    end, neg_len, s = best
    return end + neg_len, s


def _stop_prefix_len(text: str, stop: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-n:]):
                longest = n
                break
    return longest
