"""Unit tests of the paged KV cache bookkeeping: block pool, chained hashing, KVCacheManager."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neutrino.errors import ConfigError
from neutrino.kv_cache import NULL_BLOCK_ID, BlockPool, KVCacheManager, hash_block_tokens, hash_request_blocks
from neutrino.request import Request
from neutrino.sampling_params import SamplingParams

BLOCK_SIZE = 4


def make_request(request_id: str, token_ids: list[int], max_tokens: int = 4) -> Request:
    """A request with the given prompt token ids."""
    return Request(request_id, list(token_ids), SamplingParams(max_tokens=max_tokens), max_tokens=max_tokens)


def make_manager(num_blocks: int = 16, caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks, BLOCK_SIZE, enable_prefix_caching=caching)


def admit(manager: KVCacheManager, request: Request) -> int:
    """Look up the prefix cache and allocate the whole prompt, like the scheduler's first step."""
    hits, num_cached = manager.get_computed_blocks(request)
    assert manager.allocate_slots(request, request.num_tokens - num_cached, hits) is not None
    request.num_computed_tokens = request.num_tokens
    return num_cached


def assert_no_leak(manager: KVCacheManager) -> None:
    pool = manager.block_pool
    assert manager.num_free_blocks == manager.num_usable_blocks
    assert all(b.ref_cnt == 0 for b in pool.blocks if not b.is_null)
    assert not manager.req_to_blocks and not manager.req_to_block_ids


# ---- hashing ------------------------------------------------------------------------------------


def test_only_full_blocks_are_hashed_and_hashes_chain() -> None:
    hashes = hash_request_blocks(list(range(10)), BLOCK_SIZE)
    assert len(hashes) == 2  # tokens 8, 9 form a partial block
    assert hashes[0] == hash_block_tokens(None, [0, 1, 2, 3])
    assert hashes[1] == hash_block_tokens(hashes[0], [4, 5, 6, 7])
    # same block content after a different prefix hashes differently
    assert hash_request_blocks([9, 9, 9, 9, 4, 5, 6, 7], BLOCK_SIZE)[1] != hashes[1]


def test_hashing_is_incremental() -> None:
    tokens = list(range(6))
    known = hash_request_blocks(tokens, BLOCK_SIZE)
    tokens += [6, 7, 8]
    assert hash_request_blocks(tokens, BLOCK_SIZE, known) is known
    assert known == hash_request_blocks(tokens, BLOCK_SIZE)


def test_hashes_are_deterministic_across_processes() -> None:
    code = "from neutrino.kv_cache import hash_request_blocks; print(hash_request_blocks(list(range(12)), 4))"
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
    assert len(outs) == 1 and outs.pop().strip() == str(hash_request_blocks(list(range(12)), 4))


# ---- block pool ---------------------------------------------------------------------------------


def test_null_block_is_never_allocated() -> None:
    pool = BlockPool(4, enable_caching=True)
    assert pool.num_usable_blocks == pool.num_free_blocks == 3
    blocks = pool.get_new_blocks(3)
    assert [b.block_id for b in blocks] == [1, 2, 3] and NULL_BLOCK_ID not in {b.block_id for b in blocks}
    assert pool.usage == 1.0
    with pytest.raises(ValueError):
        pool.get_new_blocks(1)
    pool.free_blocks(reversed(blocks))
    assert pool.usage == 0.0
    with pytest.raises(ConfigError):
        BlockPool(1, enable_caching=True)


def test_free_queue_order_uncached_first_then_lru() -> None:
    pool = BlockPool(6, enable_caching=True)
    a, b, c = pool.get_new_blocks(3)  # ids 1, 2, 3
    pool.cache_full_blocks([a, b], [111, 222], 0, 2)
    pool.free_blocks([c, b, a])  # reverse order of a sequence
    # uncached c goes to the head; cached b, a go to the tail in free order (b freed before a)
    assert list(pool.free_block_queue) == [3, 4, 5, 2, 1]
    assert pool.get_cached_block(222) is b
    pool.touch([b])  # a hit on a free cached block pulls it out of the free queue
    assert b.ref_cnt == 1 and 2 not in pool.free_block_queue
    got = pool.get_new_blocks(4)  # 3, 4, 5 then evicts a
    assert [x.block_id for x in got] == [3, 4, 5, 1]
    assert pool.get_cached_block(111) is None and a.block_hash is None
    assert pool.get_cached_block(222) is b


# ---- manager: allocation and reference counts ---------------------------------------------------


def test_allocate_grows_block_table_and_free_returns_everything() -> None:
    manager = make_manager()
    req = make_request("a", list(range(6)))
    assert len(manager.allocate_slots(req, 6)) == 2
    req.num_computed_tokens = 6
    for t in range(6):  # decode: a new block only every BLOCK_SIZE tokens
        req.append_output_token(100 + t)
        new = manager.allocate_slots(req, 1)
        assert len(new) == (1 if req.num_computed_tokens % BLOCK_SIZE == 0 else 0)
        req.num_computed_tokens += 1
    assert len(manager.get_block_ids("a")) == manager.blocks_needed(12) == 3
    manager.free(req)
    manager.free(req)  # idempotent
    assert_no_leak(manager)


def test_allocate_returns_none_without_side_effects() -> None:
    manager = make_manager(num_blocks=4)  # 3 usable blocks
    req = make_request("a", list(range(13)))
    assert manager.allocate_slots(req, 13) is None
    assert manager.num_free_blocks == 3 and manager.get_block_ids("a") == []
    assert manager.allocate_slots(req, 12) is not None


def test_shared_prefix_reference_counts_and_reuse_after_free() -> None:
    manager = make_manager()
    prefix = list(range(3 * BLOCK_SIZE))
    a, b = make_request("a", prefix + [50, 51]), make_request("b", prefix + [60])
    assert admit(manager, a) == 0
    assert admit(manager, b) == 3 * BLOCK_SIZE
    shared = manager.req_to_blocks["a"][:3]
    assert manager.req_to_blocks["b"][:3] == shared and all(blk.ref_cnt == 2 for blk in shared)
    assert manager.req_to_blocks["a"][3] is not manager.req_to_blocks["b"][3]
    manager.free(a)
    assert all(blk.ref_cnt == 1 for blk in shared)
    manager.free(b)
    assert_no_leak(manager)
    assert all(blk.block_hash is not None for blk in shared)  # free but still cached
    c = make_request("c", prefix + [70, 71, 72])
    assert admit(manager, c) == 3 * BLOCK_SIZE
    assert manager.req_to_blocks["c"][:3] == shared
    manager.free(c)
    assert_no_leak(manager)


def test_lru_eviction_of_freed_cached_blocks() -> None:
    manager = make_manager(num_blocks=7)  # 6 usable blocks
    a = make_request("a", list(range(0, 8)))  # 2 full blocks
    b = make_request("b", list(range(100, 108)))
    admit(manager, a)
    admit(manager, b)
    a_blocks, b_blocks = list(manager.req_to_blocks["a"]), list(manager.req_to_blocks["b"])
    manager.free(a)  # a freed first: least recently used
    manager.free(b)
    # 2 never-used blocks first, then a's tail block, then a's head block
    filler = make_request("f", list(range(200, 200 + 3 * BLOCK_SIZE)))
    admit(manager, filler)
    filler_blocks = manager.req_to_blocks["f"]
    assert filler_blocks[2] is a_blocks[1] and a_blocks[0] not in filler_blocks
    assert not any(blk in filler_blocks for blk in b_blocks)
    assert manager.get_computed_blocks(make_request("a2", list(range(0, 8)) + [1]))[1] == BLOCK_SIZE
    assert manager.get_computed_blocks(make_request("b2", list(range(100, 108)) + [1]))[1] == 2 * BLOCK_SIZE


def test_prefix_cache_never_reports_all_tokens_computed() -> None:
    manager = make_manager()
    prompt = list(range(3 * BLOCK_SIZE))  # exactly 3 full blocks
    admit(manager, make_request("a", prompt))
    hits, num_computed = manager.get_computed_blocks(make_request("b", prompt))
    assert num_computed == 2 * BLOCK_SIZE == len(hits) * BLOCK_SIZE
    hits, num_computed = manager.get_computed_blocks(make_request("c", prompt + [99]))
    assert num_computed == 3 * BLOCK_SIZE
    hits, num_computed = manager.get_computed_blocks(make_request("d", prompt[:1]))
    assert (hits, num_computed) == ([], 0)


def test_claimed_cache_hits_are_not_counted_as_free() -> None:
    manager = make_manager(num_blocks=5)  # 4 usable blocks
    prompt = list(range(3 * BLOCK_SIZE))
    a = make_request("a", prompt)
    admit(manager, a)
    manager.free(a)  # 3 cached free blocks + 1 empty one
    b = make_request("b", prompt + list(range(50, 58)))  # 20 tokens: 3 hits + 2 new blocks
    hits, num_cached = manager.get_computed_blocks(b)
    assert num_cached == 3 * BLOCK_SIZE and manager.num_free_blocks == 4
    assert manager.allocate_slots(b, b.num_tokens - num_cached, hits) is None
    assert all(blk.ref_cnt == 0 for blk in hits) and manager.num_free_blocks == 4
    c = make_request("c", prompt + [50, 51, 52, 53])  # 16 tokens: 3 hits + 1 new block
    hits, num_cached = manager.get_computed_blocks(c)
    assert manager.allocate_slots(c, c.num_tokens - num_cached, hits) is not None
    assert manager.num_free_blocks == 0 and all(blk.block_hash is not None for blk in hits)


def test_decode_caches_blocks_as_they_fill() -> None:
    manager = make_manager()
    a = make_request("a", list(range(6)))
    admit(manager, a)
    assert len(manager.block_pool.cached_block_hash_to_block) == 1
    for t in (6, 7):
        a.append_output_token(t)
        manager.allocate_slots(a, 1)
        a.num_computed_tokens += 1
    assert len(manager.block_pool.cached_block_hash_to_block) == 2
    b = make_request("b", list(range(8)) + [42])  # prompt + output of a as a prefix
    assert manager.get_computed_blocks(b)[1] == 2 * BLOCK_SIZE


def test_hit_rate_counts_each_request_once_and_reset() -> None:
    manager = make_manager()
    prompt = list(range(2 * BLOCK_SIZE + 1))
    a = make_request("a", prompt)
    admit(manager, a)
    b = make_request("b", prompt)
    manager.get_computed_blocks(b)
    manager.get_computed_blocks(b)  # a retry after a failed allocation is not a new query
    assert manager.prefix_cache_hit_rate == pytest.approx(8 / 18)
    assert not manager.reset_prefix_cache()  # "a" still holds blocks
    manager.free(a)
    assert manager.reset_prefix_cache()
    assert manager.prefix_cache_hit_rate == 0.0 and not manager.block_pool.cached_block_hash_to_block
    assert manager.get_computed_blocks(make_request("c", prompt)) == ([], 0)


def test_prefix_caching_disabled() -> None:
    manager = make_manager(caching=False)
    prompt = list(range(3 * BLOCK_SIZE))
    admit(manager, make_request("a", prompt))
    assert manager.get_computed_blocks(make_request("b", prompt + [1])) == ([], 0)
    assert not manager.block_pool.cached_block_hash_to_block
