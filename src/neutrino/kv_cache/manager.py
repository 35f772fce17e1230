"""`KVCacheManager`: the scheduler's only view of the paged KV cache.

Each request owns a block table (a list of blocks covering its tokens `[0, num_computed_tokens +
num_scheduled)`). With prefix caching, every block that becomes full is indexed by its chained hash
so later requests with the same prefix reuse it instead of recomputing it.
"""

from __future__ import annotations

from collections.abc import Sequence

from neutrino.kv_cache.block_pool import BlockPool, KVCacheBlock
from neutrino.kv_cache.hashing import hash_request_blocks
from neutrino.request import Request


class KVCacheManager:
    """Allocates and frees block tables for requests; looks up and fills the prefix cache."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size  # tokens per block
        self.enable_prefix_caching = enable_prefix_caching
        self.block_pool = BlockPool(num_blocks, enable_prefix_caching)
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}  # request id -> block table
        self.req_to_block_ids: dict[str, list[int]] = {}  # request id -> block ids (same order)
        self.req_to_block_hashes: dict[str, list[int]] = {}  # request id -> hashes of its full blocks
        self.num_cached_blocks: dict[str, int] = {}  # request id -> leading blocks already indexed
        self._queried: set[str] = set()  # requests whose prefix lookup has been counted in metrics

    # ---- capacity -------------------------------------------------------------------------------

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold `num_tokens` tokens (ceiling division)."""
        return -(-num_tokens // self.block_size)

    @property
    def num_usable_blocks(self) -> int:
        """Blocks a request can ever get (all but the null block 0)."""
        return self.block_pool.num_usable_blocks

    @property
    def capacity_tokens(self) -> int:
        """Total KV capacity in tokens."""
        return self.num_usable_blocks * self.block_size

    @property
    def num_free_blocks(self) -> int:
        """Blocks not held by any request (cached-but-free blocks included)."""
        return self.block_pool.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of usable blocks held by requests."""
        return self.block_pool.usage

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Fraction of looked-up prompt tokens served from the prefix cache."""
        return self.block_pool.prefix_cache_hit_rate

    def reset_prefix_cache(self) -> bool:
        """Drop all cached blocks; False (and nothing done) while any request holds blocks."""
        return self.block_pool.reset_prefix_cache()

    # ---- per-request API ------------------------------------------------------------------------

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Longest cached prefix of `request`'s full blocks, and the number of tokens it covers.

        Never covers all tokens: at least the last token is recomputed to produce logits, so the hit
        is capped at `num_tokens - 1` rounded down to a block boundary. The lookup takes no
        reference; pass the blocks to `allocate_slots` to claim them.
        """
        if not self.enable_prefix_caching:
            return [], 0
        block_hashes = self._block_hashes(request)
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        hits: list[KVCacheBlock] = []
        for i in range(min(max_hit_blocks, len(block_hashes))):
            block = self.block_pool.get_cached_block(block_hashes[i])
            if block is None:
                break
            hits.append(block)
        num_hit_tokens = len(hits) * self.block_size
        if request.request_id not in self._queried:  # count once per residency, not per retry
            self._queried.add(request.request_id)
            self.block_pool.record_prefix_query(request.num_tokens, num_hit_tokens)
        return hits, num_hit_tokens

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: Sequence[KVCacheBlock] = (),
    ) -> list[KVCacheBlock] | None:
        """Grow `request`'s block table to cover its computed tokens, the prefix-cache hits in
        `new_computed_blocks` and `num_new_tokens` more tokens.

        Returns the newly allocated blocks (possibly empty), or None, changing nothing, when there
        are not enough free blocks. Free blocks include cached blocks nobody holds, except the
        prefix-cache hits being claimed here. Every block that becomes full (given the tokens
        known) is then indexed in the prefix cache.
        """
        req_id = request.request_id
        req_blocks = self.req_to_blocks.get(req_id, [])
        assert not (new_computed_blocks and req_blocks), "prefix-cache hits only for a new block table"
        num_computed = request.num_computed_tokens + len(new_computed_blocks) * self.block_size
        num_total = num_computed + num_new_tokens
        assert num_total <= request.num_tokens, (
            f"{req_id}: scheduling {num_total} > {request.num_tokens} tokens"
        )
        num_required = max(0, self.blocks_needed(num_total) - len(req_blocks) - len(new_computed_blocks))
        num_claimed_free = sum(1 for b in new_computed_blocks if b.ref_cnt == 0)
        if num_required > self.block_pool.num_free_blocks - num_claimed_free:
            return None
        self.block_pool.touch(new_computed_blocks)  # before get_new_blocks: hits must not be evicted
        new_blocks = self.block_pool.get_new_blocks(num_required)
        req_blocks = self.req_to_blocks.setdefault(req_id, req_blocks)
        block_ids = self.req_to_block_ids.setdefault(req_id, [])
        for block in (*new_computed_blocks, *new_blocks):
            req_blocks.append(block)
            block_ids.append(block.block_id)
        self._cache_full_blocks(request, num_total)
        return new_blocks

    def free(self, request: Request) -> None:
        """Release `request`'s blocks (tail first, so tails are evicted before shared heads) and
        forget it. Idempotent."""
        req_id = request.request_id
        self.block_pool.free_blocks(reversed(self.req_to_blocks.pop(req_id, [])))
        self.req_to_block_ids.pop(req_id, None)
        self.req_to_block_hashes.pop(req_id, None)
        self.num_cached_blocks.pop(req_id, None)
        self._queried.discard(req_id)

    def get_block_ids(self, request_id: str) -> list[int]:
        """A copy of the request's block table as block ids ([] for an unknown request)."""
        return list(self.req_to_block_ids.get(request_id, ()))

    # ---- internals ------------------------------------------------------------------------------

    def _block_hashes(self, request: Request) -> list[int]:
        """Chained hashes of the request's full blocks, extended incrementally as tokens arrive."""
        known = self.req_to_block_hashes.setdefault(request.request_id, [])
        return hash_request_blocks(request.all_token_ids, self.block_size, known)

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        """Index the request's blocks that are full once its first `num_tokens` tokens are computed."""
        if not self.enable_prefix_caching:
            return
        req_id = request.request_id
        num_full = num_tokens // self.block_size
        num_cached = self.num_cached_blocks.get(req_id, 0)
        if num_full <= num_cached:
            return
        block_hashes = self._block_hashes(request)
        self.block_pool.cache_full_blocks(self.req_to_blocks[req_id], block_hashes, num_cached, num_full)
        self.num_cached_blocks[req_id] = num_full
