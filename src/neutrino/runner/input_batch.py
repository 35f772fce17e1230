"""Turns a SchedulerOutput into the flat tensors one forward pass needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.scheduler.output import SchedulerOutput


@dataclass
class InputBatch:
    """Flat model inputs plus which hidden rows to turn into logits."""

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    sample_indices: list[int]  # flat index of the last token of each sampled request
    sample_request_ids: list[str]  # same order as sample_indices


def build_input_batch(out: SchedulerOutput, block_size: int, device: torch.device) -> InputBatch:
    """Concatenate every scheduled request's tokens into one batch (vLLM's flat layout)."""
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    query_start_loc = [0]
    seq_lens: list[int] = []
    sample_indices: list[int] = []
    sample_ids: list[str] = []
    max_blocks = max(len(s.block_ids) for s in out.scheduled)
    tables = torch.zeros(len(out.scheduled), max_blocks, dtype=torch.int64)
    for i, sched in enumerate(out.scheduled):
        start = sched.num_computed_tokens
        n = len(sched.token_ids)
        input_ids.extend(sched.token_ids)
        pos = range(start, start + n)
        positions.extend(pos)
        blocks = sched.block_ids
        slots.extend(blocks[p // block_size] * block_size + p % block_size for p in pos)
        tables[i, : len(blocks)] = torch.tensor(blocks, dtype=torch.int64)
        query_start_loc.append(query_start_loc[-1] + n)
        seq_lens.append(start + n)
        if sched.sample:
            sample_indices.append(query_start_loc[-1] - 1)
            sample_ids.append(sched.request_id)
    decode_only = query_start_loc[-1] == len(seq_lens)
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        query_start_loc=query_start_loc,
        seq_lens=seq_lens,
        block_tables=tables.to(device),
        seq_lens_tensor=torch.tensor(seq_lens, dtype=torch.int64, device=device),
        block_size=block_size,
        decode_only=decode_only,
    )
    if not decode_only:
        _split_decodes(meta, tables, device)
    return InputBatch(
        input_ids=torch.tensor(input_ids, dtype=torch.int64, device=device),
        positions=torch.tensor(positions, dtype=torch.int64, device=device),
        meta=meta,
        sample_indices=sample_indices,
        sample_request_ids=sample_ids,
    )


def _split_decodes(meta: AttentionMetadata, tables: torch.Tensor, device: torch.device) -> None:
    """Mark the one-token sequences of a mixed batch so attention runs them as one decode batch."""
    qsl = meta.query_start_loc
    decodes = [i for i in range(meta.num_seqs) if qsl[i + 1] - qsl[i] == 1]
    meta.prefill_seqs = [i for i in range(meta.num_seqs) if qsl[i + 1] - qsl[i] > 1]
    meta.prefill_seq_ids = torch.tensor(meta.prefill_seqs, dtype=torch.int64, device=device)
    meta.query_start_loc_tensor = torch.tensor(qsl, dtype=torch.int64, device=device)
    if not decodes:
        return
    idx = torch.tensor(decodes, dtype=torch.int64)
    meta.decode_token_idx = torch.tensor([qsl[i] for i in decodes], dtype=torch.int64, device=device)
    meta.decode_block_tables = tables[idx].to(device)
    meta.decode_seq_lens = torch.tensor([meta.seq_lens[i] for i in decodes], dtype=torch.int64, device=device)
