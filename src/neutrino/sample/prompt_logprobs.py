"""Prompt logprobs: how likely the model found each prompt token given the tokens before it."""

from __future__ import annotations

import torch

# (token_id, its logprob, top-k [(token_id, logprob), ...] in descending order)
PromptTokenLogprobs = tuple[int, float, list[tuple[int, float]]]

_CHUNK_ROWS = 512  # bounds the float32 log_softmax buffer to _CHUNK_ROWS * vocab


def compute_prompt_logprobs(logits: torch.Tensor, target_ids: list[int], k: int) -> list[PromptTokenLogprobs]:
    """Logprob of each target token under the logits of the position before it, plus the top k.

    logits: [L, vocab], row j being the model's prediction for the token after position j;
    target_ids: the L tokens those rows predict (the prompt shifted by one). Logprobs are raw
    (log_softmax of the unprocessed logits in float32), like the sampler's. k may be 0.
    """
    if logits.dim() != 2 or logits.shape[0] != len(target_ids):
        raise ValueError(
            f"expected logits [L, vocab] with L == len(target_ids) = {len(target_ids)}, "
            f"got shape {tuple(logits.shape)}"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    result: list[PromptTokenLogprobs] = []
    for start in range(0, len(target_ids), _CHUNK_ROWS):
        chunk_ids = target_ids[start : start + _CHUNK_ROWS]
        result.extend(_chunk_logprobs(logits[start : start + len(chunk_ids)], chunk_ids, k))
    return result


def _chunk_logprobs(logits: torch.Tensor, target_ids: list[int], k: int) -> list[PromptTokenLogprobs]:
    """One chunk of `compute_prompt_logprobs`.  logits: [rows, vocab]."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [rows, vocab]
    targets = torch.tensor(target_ids, dtype=torch.long, device=logits.device)  # [rows]
    chosen = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).tolist()  # [rows]
    if k > 0:
        top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)  # values/indices: [rows, k]
        top_ids, top_vals = top.indices.tolist(), top.values.tolist()
    else:
        top_ids = top_vals = [[] for _ in target_ids]
    return [
        (tok, lp, list(zip(ids, vals, strict=True)))
        for tok, lp, ids, vals in zip(target_ids, chosen, top_ids, top_vals, strict=True)
    ]
