"""Logprobs in OpenAI's two shapes: the legacy completions one and the chat one."""

from __future__ import annotations

from typing import Any

from neutrino.outputs import TokenLogprob


class TokenText:
    """Text of single token ids (memoized): what logprobs show as `token`."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id])
            if len(self._cache) < 200_000:
                self._cache[token_id] = text
        return text


def _finite(value: float) -> float:
    return value if value > -1e30 else -9999.0  # -inf is not JSON


def completion_logprobs(entries: list[TokenLogprob], text: TokenText, offset: int) -> dict[str, Any]:
    """`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`; `offset` is the text offset of the
    first entry."""
    tokens, lps, tops, offsets = [], [], [], []
    for entry in entries:
        tok = text(entry.token_id)
        tokens.append(tok)
        lps.append(_finite(entry.logprob))
        tops.append({text(t): _finite(lp) for t, lp in entry.top})
        offsets.append(offset)
        offset += len(tok)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(entries: list[TokenLogprob], text: TokenText, top_n: int) -> dict[str, Any]:
    """`{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": None}`."""
    content = []
    for entry in entries:
        tok = text(entry.token_id)
        top = [{"token": text(t), "logprob": _finite(lp), "bytes": list(text(t).encode("utf-8", "replace"))}
               for t, lp in entry.top[:top_n]]
        content.append({"token": tok, "logprob": _finite(entry.logprob),
                        "bytes": list(tok.encode("utf-8", "replace")), "top_logprobs": top})
    return {"content": content, "refusal": None}
