"""Chained hashes of full KV blocks, the keys of the prefix cache.

The hash of block i covers the block's token ids and the hash of block i-1, so equal hashes mean
equal prefixes (up to hash collisions), not merely equal blocks. Only FULL blocks are hashed: a
partial block's content is still growing.

`hash()` of a tuple of ints is deterministic across processes (PYTHONHASHSEED only salts str and
bytes). `hash(None)` is not before Python 3.12, so the first block chains from a fixed integer.
"""

from __future__ import annotations

from collections.abc import Sequence

# Parent hash of a sequence's first block (a fixed int, unlike hash(None) on Python 3.11).
ROOT_BLOCK_HASH = 0x6E65757472696E6F  # "neutrino"


def hash_block_tokens(parent_hash: int | None, block_token_ids: Sequence[int]) -> int:
    """Hash one full block given the hash of the block before it (None for the first block)."""
    parent = ROOT_BLOCK_HASH if parent_hash is None else parent_hash
    return hash((parent, tuple(block_token_ids)))


def hash_request_blocks(
    token_ids: Sequence[int], block_size: int, known_hashes: list[int] | None = None
) -> list[int]:
    """Hashes of every full block of `token_ids`, extending `known_hashes` (a prefix) in place.

    Hashing is incremental: a request's hashes are kept between steps and only blocks that became
    full since the last call are hashed. Returns the (possibly same) list.
    """
    hashes = [] if known_hashes is None else known_hashes
    num_full_blocks = len(token_ids) // block_size
    parent = hashes[-1] if hashes else None
    for i in range(len(hashes), num_full_blocks):
        parent = hash_block_tokens(parent, token_ids[i * block_size : (i + 1) * block_size])
        hashes.append(parent)
    return hashes
