"""Paged KV cache bookkeeping (pure Python): block pool, prefix-cache hashing, manager."""

from neutrino.kv_cache.block_pool import NULL_BLOCK_ID, BlockPool, KVCacheBlock
from neutrino.kv_cache.hashing import hash_block_tokens, hash_request_blocks
from neutrino.kv_cache.manager import KVCacheManager

__all__ = [
    "NULL_BLOCK_ID",
    "BlockPool",
    "KVCacheBlock",
    "KVCacheManager",
    "hash_block_tokens",
    "hash_request_blocks",
]
