"""The pool of KV cache blocks: reference counts, the free queue and the prefix-cache index.

Block 0 is the null block: it is never handed out, so a model runner may pad block tables and
slot mappings with block 0 (e.g. for CUDA-graph padding) and the garbage written there can never
corrupt a live request. The usable capacity is therefore `num_blocks - 1` blocks.

The free queue is an `OrderedDict` keyed by block id, in eviction order (head = evicted first):
O(1) pop from the head, append to the tail and removal from the middle (a prefix-cache hit on a
free block). A free block that still holds a cached full block keeps its hash until it is popped
for reuse, so freed requests keep serving prefix-cache hits until their blocks are needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from neutrino.errors import ConfigError

NULL_BLOCK_ID = 0  # reserved padding block; never allocated, never freed


@dataclass(eq=False, slots=True)
class KVCacheBlock:
    """One fixed-size page of the KV cache (identity-compared)."""

    block_id: int  # index of the block in the KV cache tensors' block dimension
    ref_cnt: int = 0  # number of requests whose block table holds this block
    block_hash: int | None = None  # chained hash while it holds a cached full block, else None

    @property
    def is_null(self) -> bool:
        return self.block_id == NULL_BLOCK_ID


class BlockPool:
    """Owns every `KVCacheBlock`: allocation, reference counting, LRU eviction of cached blocks."""

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        if num_blocks < 2:
            raise ConfigError(
                f"the KV cache needs at least 2 blocks (one is the null block), got {num_blocks}"
            )
        self.num_blocks = num_blocks  # including the null block
        self.enable_caching = enable_caching  # whether full blocks are indexed by hash
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.null_block = self.blocks[NULL_BLOCK_ID]
        self.null_block.ref_cnt = 1  # held forever, so it never reaches the free queue
        # Free blocks in eviction order: head = least recently freed (evicted first).
        self.free_block_queue: OrderedDict[int, KVCacheBlock] = OrderedDict(
            (b.block_id, b) for b in self.blocks if not b.is_null
        )
        self.cached_block_hash_to_block: dict[int, KVCacheBlock] = {}  # prefix-cache index
        self.num_query_tokens = 0  # tokens looked up in the prefix cache (metrics)
        self.num_hit_tokens = 0  # of which found in the prefix cache (metrics)

    # ---- capacity -------------------------------------------------------------------------------

    @property
    def num_usable_blocks(self) -> int:
        """Blocks that can be allocated (all but the null block)."""
        return self.num_blocks - 1

    @property
    def num_free_blocks(self) -> int:
        """Blocks with ref_cnt 0, including those that still hold cached (evictable) content."""
        return len(self.free_block_queue)

    @property
    def usage(self) -> float:
        """Fraction of usable blocks held by at least one request (0.0 .. 1.0)."""
        return 1.0 - self.num_free_blocks / self.num_usable_blocks

    # ---- allocation -----------------------------------------------------------------------------

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Pop `num_blocks` blocks from the head of the free queue, evicting their cached content."""
        if num_blocks > self.num_free_blocks:
            raise ValueError(f"cannot allocate {num_blocks} blocks, only {self.num_free_blocks} are free")
        new_blocks = []
        for _ in range(num_blocks):
            _, block = self.free_block_queue.popitem(last=False)
            self._evict(block)
            assert block.ref_cnt == 0, f"block {block.block_id} in the free queue has ref_cnt {block.ref_cnt}"
            block.ref_cnt = 1
            new_blocks.append(block)
        return new_blocks

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take a reference on prefix-cache hits, pulling free ones out of the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free_block_queue[block.block_id]
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference on each block; blocks reaching 0 become free.

        Callers pass a request's blocks in reverse order, so that the tail of a sequence is evicted
        before its head (heads are the prefixes most likely to be shared). A freed block holding
        cached content goes to the tail of the free queue (LRU); one without cached content is
        worthless and goes to the head, so it is reused before any cached block is evicted.
        """
        for block in ordered_blocks:
            assert not block.is_null, "the null block is never freed"
            assert block.ref_cnt > 0, f"block {block.block_id} freed more often than allocated"
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.free_block_queue[block.block_id] = block
                if block.block_hash is None:
                    self.free_block_queue.move_to_end(block.block_id, last=False)

    # ---- prefix cache ---------------------------------------------------------------------------

    def get_cached_block(self, block_hash: int) -> KVCacheBlock | None:
        """The block holding the full block with this chained hash, if still cached."""
        return self.cached_block_hash_to_block.get(block_hash)

    def cache_full_blocks(
        self,
        blocks: Sequence[KVCacheBlock],
        block_hashes: Sequence[int],
        num_cached_blocks: int,
        num_full_blocks: int,
    ) -> None:
        """Index `blocks[num_cached_blocks:num_full_blocks]` (now full) under their chained hashes.

        If another block already holds the same content (two requests computed the same prefix
        concurrently), the first one stays in the index; the duplicate is still tagged with the
        hash but will simply be evicted without serving hits.
        """
        if not self.enable_caching:
            return
        for i in range(num_cached_blocks, num_full_blocks):
            block, block_hash = blocks[i], block_hashes[i]
            if block.block_hash is not None:  # a prefix-cache hit: already indexed
                assert block.block_hash == block_hash, f"block {block.block_id} re-cached with another hash"
                continue
            block.block_hash = block_hash
            self.cached_block_hash_to_block.setdefault(block_hash, block)

    def record_prefix_query(self, num_query_tokens: int, num_hit_tokens: int) -> None:
        """Count one prefix-cache lookup (in tokens) for metrics."""
        self.num_query_tokens += num_query_tokens
        self.num_hit_tokens += num_hit_tokens

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Fraction of looked-up tokens served from the prefix cache (0.0 before any lookup)."""
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block and the hit counters. Only possible while no block is in use
        (in-use blocks may be hit again mid-step); returns False, changing nothing, otherwise."""
        if self.num_free_blocks != self.num_usable_blocks:
            return False
        self.cached_block_hash_to_block.clear()
        for block in self.blocks:
            block.block_hash = None
        self.num_query_tokens = self.num_hit_tokens = 0
        return True

    def _evict(self, block: KVCacheBlock) -> None:
        """Drop a block's cached content before it is reused."""
        if block.block_hash is None:
            return
        if self.cached_block_hash_to_block.get(block.block_hash) is block:
            del self.cached_block_hash_to_block[block.block_hash]
        block.block_hash = None
