"""Logits processors: small pure functions on tensors (none of them mutates its input).

Two kinds:

* per-row processors take one row `logits  # [vocab]` and the request's token history; the
  sampler calls them only for rows that use the feature (logit bias, min_tokens, penalties);
* batched processors take `logits  # [num_rows, vocab]` plus one parameter per row and are
  vectorised (temperature, top-k, top-p, min-p). The `*_mask` functions return the boolean
  "keep" mask so the filters can be tested on hand-made distributions.

Top-k and top-p live in `top_k_top_p.py` (one shared sort) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neutrino.sample.top_k_top_p import sort_descending, top_k_top_p_mask

__all__ = [
    "apply_logit_bias",
    "apply_mask",
    "apply_min_tokens",
    "apply_presence_frequency_penalties",
    "apply_repetition_penalty",
    "apply_temperature",
    "min_p_mask",
    "sort_descending",
    "top_k_mask",
    "top_k_top_p_mask",
    "top_p_mask",
]

_NEG_INF = float("-inf")


def apply_logit_bias(logits: torch.Tensor, logit_bias: dict[int, float]) -> torch.Tensor:
    """Add `logit_bias[token]` to each listed token (OpenAI semantics); ids outside the vocab are ignored."""
    vocab_size = logits.shape[-1]  # logits: [vocab]
    items = [(tok, bias) for tok, bias in logit_bias.items() if 0 <= tok < vocab_size]
    if not items:
        return logits
    ids = torch.tensor([tok for tok, _ in items], dtype=torch.long, device=logits.device)  # [n]
    bias = torch.tensor([b for _, b in items], dtype=logits.dtype, device=logits.device)  # [n]
    return logits.index_add(-1, ids, bias)


def apply_min_tokens(logits: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """Forbid the stop tokens (EOS and stop_token_ids): set their logits to -inf."""
    vocab_size = logits.shape[-1]  # logits: [vocab]
    ids = [t for t in stop_ids if 0 <= t < vocab_size]
    if not ids:
        return logits
    index = torch.tensor(ids, dtype=torch.long, device=logits.device)  # [n]
    return logits.index_fill(-1, index, _NEG_INF)


def apply_repetition_penalty(logits: torch.Tensor, token_ids: Sequence[int], penalty: float) -> torch.Tensor:
    """HF/vLLM repetition penalty over every token seen (prompt + output).

    For each distinct seen token: a positive logit is divided by `penalty`, a negative one
    multiplied by it (so penalty > 1 always makes seen tokens less likely).
    """
    if penalty == 1.0 or not token_ids:
        return logits
    vocab_size = logits.shape[-1]  # logits: [vocab]
    ids = torch.tensor(token_ids, dtype=torch.long, device=logits.device)  # [n]
    ids = ids[(ids >= 0) & (ids < vocab_size)].unique()  # [n_distinct]
    seen = logits[ids]  # [n_distinct]
    penalised = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.index_copy(-1, ids, penalised)


def apply_presence_frequency_penalties(
    logits: torch.Tensor, output_token_ids: Sequence[int], presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI penalties over the output tokens only.

    logit[t] -= frequency * count[t] + presence * (count[t] > 0)
    """
    if (presence == 0.0 and frequency == 0.0) or not output_token_ids:
        return logits
    vocab_size = logits.shape[-1]  # logits: [vocab]
    ids = torch.tensor(output_token_ids, dtype=torch.long, device=logits.device)  # [n]
    ids = ids[(ids >= 0) & (ids < vocab_size)]
    counts = torch.bincount(ids, minlength=vocab_size).to(logits.dtype)  # [vocab]
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide each row by its temperature.  logits: [rows, vocab]; temperature: [rows] (> 0)."""
    return logits / temperature.unsqueeze(-1)


def top_k_mask(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep mask of top-k alone.  logits: [rows, vocab]; top_k: [rows] (<= 0 disables)."""
    ones = torch.ones(logits.shape[0], dtype=logits.dtype, device=logits.device)
    return top_k_top_p_mask(logits, top_k, ones)


def top_p_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep mask of top-p alone.  logits: [rows, vocab]; top_p: [rows] (>= 1 disables)."""
    zeros = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return top_k_top_p_mask(logits, zeros, top_p)


def min_p_mask(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Keep tokens whose probability is >= min_p * (max probability of the row).

    logits: [rows, vocab]; min_p: [rows] (0 disables). Returns bool [rows, vocab].
    """
    probs = logits.softmax(dim=-1)  # [rows, vocab]
    max_prob = probs.amax(dim=-1, keepdim=True)  # [rows, 1]
    return probs >= min_p.unsqueeze(-1).to(probs.dtype) * max_prob


def apply_mask(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Set the logits of the tokens not kept to -inf.  logits, keep: [rows, vocab]."""
    return logits.masked_fill(~keep, _NEG_INF)
