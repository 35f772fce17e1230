"""Attention backends over a paged KV cache. The portable torch backend runs on CPU and CUDA."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from neutrino.layers.attention import cpu_kernels
from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.registry import Registry


class AttentionBackend(ABC):
    """Writes this step's keys/values into the paged cache and attends over each sequence's context."""

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,  # [T, Hq, D]
        k: torch.Tensor,  # [T, Hkv, D]
        v: torch.Tensor,  # [T, Hkv, D]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, Hkv, D]
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # [T, Hq, D]
        """Return the attention output for every query token."""


# index_copy_ is the faster write for a few rows (3.9 vs 5.3 us at one row) and 12x slower at 512 rows
# (1.1 ms vs 93 us for [512, 3, 64] float32 on a 2-vCPU AMD EPYC, 2026-12-04): above this, index_put_.
INDEX_COPY_MAX_ROWS = 16  # the same limit in csrc/decoder_plan.cpp


def write_slots(flat_cache: torch.Tensor, slots: torch.Tensor, rows: torch.Tensor) -> None:
    """flat_cache[slots[i]] = rows[i] (flat_cache: [num_slots, Hkv, D])."""
    if rows.shape[0] <= INDEX_COPY_MAX_ROWS:
        flat_cache.index_copy_(0, slots, rows)
    else:
        flat_cache.index_put_((slots,), rows)


ATTENTION_BACKENDS: Registry[type[AttentionBackend]] = Registry("attention backend")


@ATTENTION_BACKENDS.register("torch")
class TorchPagedAttention(AttentionBackend):
    """Gathers each sequence's blocks and runs `scaled_dot_product_attention` (GQA without copies of K/V
    per query head). On CPU, decode sequences use the C++ paged decode kernel and, in bf16, prefill
    sequences the C++ paged prefill kernel (`cpu_kernels.py`) when they are available; otherwise decodes
    run as one padded, masked batch and each prefill through SDPA."""

    def forward(self, q, k, v, kv_cache, meta, scale):
        key_cache, value_cache = kv_cache[0], kv_cache[1]  # [num_blocks, block_size, Hkv, D]
        flat_k = key_cache.view(-1, *key_cache.shape[2:])
        flat_v = value_cache.view(-1, *value_cache.shape[2:])
        write_slots(flat_k, meta.slot_mapping, k)
        write_slots(flat_v, meta.slot_mapping, v)
        if meta.decode_only:
            return self._decode(q, key_cache, value_cache, meta, scale)
        out = torch.empty_like(q)
        if meta.decode_token_idx is not None and meta.decode_token_idx.numel():
            sub = AttentionMetadata(meta.slot_mapping, [], [], meta.decode_block_tables, meta.decode_seq_lens,
                                    meta.block_size, True)
            out[meta.decode_token_idx] = self._decode(q[meta.decode_token_idx], key_cache, value_cache, sub, scale)
        if meta.prefill_seq_ids is not None and cpu_kernels.prefill_supported(q, key_cache):
            cpu_kernels.paged_prefill_attention(out, q, key_cache, value_cache, meta.block_tables,
                                                meta.prefill_seq_ids, meta.query_start_loc_tensor,
                                                meta.seq_lens_tensor, scale)
            return out
        prefill = meta.prefill_seqs if meta.prefill_seqs is not None else range(meta.num_seqs)
        for i in prefill:
            seq_len = meta.seq_lens[i]
            start, end = meta.query_start_loc[i], meta.query_start_loc[i + 1]
            out[start:end] = self._prefill_one(q[start:end], k[start:end], v[start:end], i, seq_len,
                                               key_cache, value_cache, meta, scale)
        return out

    def _prefill_one(self, q, k, v, i, seq_len, key_cache, value_cache, meta, scale):
        q_len = q.shape[0]
        if q_len == seq_len:  # nothing cached before this chunk: attend to the fresh keys directly
            keys, values, mask, causal = k, v, None, True
        else:
            nblocks = -(-seq_len // meta.block_size)
            blocks = meta.block_tables[i, :nblocks]
            keys = key_cache[blocks].flatten(0, 1)[:seq_len]  # [seq_len, Hkv, D]
            values = value_cache[blocks].flatten(0, 1)[:seq_len]
            q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
            mask = torch.arange(seq_len, device=q.device)[None, :] <= q_pos[:, None]  # [q_len, seq_len]
            causal = False
        out = F.scaled_dot_product_attention(  # 4-D inputs take the fused flash kernel on CPU
            q.transpose(0, 1)[None], keys.transpose(0, 1)[None], values.transpose(0, 1)[None],
            attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=True,
        )[0]  # [Hq, q_len, D]
        return out.transpose(0, 1)

    def _decode(self, q, key_cache, value_cache, meta, scale):
        if q.device.type == "cpu":  # C++ kernel reading the paged cache in place (None: unavailable)
            out = cpu_kernels.try_decode(q, key_cache, value_cache, meta.block_tables, meta.seq_lens_tensor, scale)
            if out is not None:
                return out
        return self._decode_torch(q, key_cache, value_cache, meta, scale)

    def _decode_torch(self, q, key_cache, value_cache, meta, scale):
        num_seqs, hq, d = q.shape
        hkv = key_cache.shape[2]
        max_blocks = -(-int(meta.seq_lens_tensor.max()) // meta.block_size)
        tables = meta.block_tables[:, :max_blocks]
        keys = key_cache[tables].flatten(1, 2)  # [B, L, Hkv, D]
        values = value_cache[tables].flatten(1, 2)
        length = keys.shape[1]
        valid = torch.arange(length, device=q.device)[None, :] < meta.seq_lens_tensor[:, None]  # [B, L]
        qg = q.view(num_seqs, hkv, hq // hkv, d)  # [B, Hkv, G, D]
        scores = torch.matmul(qg, keys.permute(0, 2, 3, 1)) * scale  # [B, Hkv, G, L]
        scores = scores.float().masked_fill(~valid[:, None, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        out = torch.matmul(probs, values.transpose(1, 2))  # [B, Hkv, G, D]
        return out.reshape(num_seqs, hq, d)
