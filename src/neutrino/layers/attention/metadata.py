"""Per-step attention metadata built by the model runner from a SchedulerOutput."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Describes the flat batch: sequence i owns query tokens [query_start_loc[i], query_start_loc[i+1])."""

    slot_mapping: torch.Tensor  # [num_tokens] int64: KV cache slot (block_id * block_size + offset) per token
    query_start_loc: list[int]  # [num_seqs + 1] offsets of each sequence's tokens in the flat batch
    seq_lens: list[int]  # [num_seqs] context length of each sequence after this step
    block_tables: torch.Tensor  # [num_seqs, max_num_blocks] int64, padded with 0
    seq_lens_tensor: torch.Tensor  # [num_seqs] int64, same as seq_lens
    block_size: int
    decode_only: bool  # every sequence has exactly one query token
    # In a mixed batch, the sequences with one query token run together through the decode path:
    decode_token_idx: torch.Tensor | None = None  # [num_decode] flat token index of each decode sequence
    decode_block_tables: torch.Tensor | None = None  # [num_decode, max_num_blocks]
    decode_seq_lens: torch.Tensor | None = None  # [num_decode] int64
    prefill_seqs: list[int] | None = None  # indices of the sequences with more than one query token
    prefill_seq_ids: torch.Tensor | None = None  # [num_prefill] int64, same as prefill_seqs
    query_start_loc_tensor: torch.Tensor | None = None  # [num_seqs + 1] int64, same as query_start_loc

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens)
