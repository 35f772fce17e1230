"""Unit tests of the continuous-batching scheduler, driven by a fake model runner on the CPU."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import pytest

from neutrino.config import CacheConfig, SchedulerConfig
from neutrino.errors import RequestRejectedError
from neutrino.request import Request, RequestStatus
from neutrino.runner.request_states import RequestStates
from neutrino.sampling_params import SamplingParams
from neutrino.scheduler import ModelRunnerOutput, Scheduler, SchedulerOutput

BLOCK_SIZE = 4
FIXED_TOKEN = 7


def make_request(
    request_id: str,
    prompt: int | list[int],
    max_tokens: int = 4,
    eos_token_id: int | None = None,
    **sampling: object,
) -> Request:
    """A request; an int prompt becomes that many tokens unique to `request_id`."""
    if isinstance(prompt, int):
        base = 1000 + (zlib.crc32(request_id.encode()) % 1000) * 1000
        prompt = list(range(base, base + prompt))
    params = SamplingParams(max_tokens=max_tokens, **sampling)  # type: ignore[arg-type]
    return Request(request_id, prompt, params, eos_token_id=eos_token_id, max_tokens=max_tokens)


def make_scheduler(
    num_blocks: int = 64,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 64,
    max_model_len: int = 64,
    chunked: bool = True,
    prefix_caching: bool = True,
    eos_token_ids: tuple[int, ...] = (),
) -> Scheduler:
    sched_cfg = SchedulerConfig(max_num_seqs, max_num_batched_tokens, chunked, max_model_len)
    cache_cfg = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=prefix_caching)
    return Scheduler(sched_cfg, cache_cfg, num_blocks, eos_token_ids=eos_token_ids)


class FakeRunner:
    """Checks each step's invariants, keeps the runner's request states from the scheduler's diffs (the
    real RequestStates) and checks them against the scheduler's requests, keeps a fake KV cache (one
    token id per slot) and verifies every request's context is really in its blocks, then samples
    `token_fn(request)` (default FIXED_TOKEN)."""

    def __init__(self, scheduler: Scheduler, token_fn: Callable[[Request], int] | None = None) -> None:
        self.scheduler = scheduler
        self.token_fn = token_fn or (lambda request: FIXED_TOKEN)
        self.kv: dict[tuple[int, int], int] = {}  # (block id, offset) -> token id written there
        self.outputs: list[SchedulerOutput] = []
        self.fed: list[dict[str, list[int]]] = []  # per step: request id -> the tokens it computed
        self.states = RequestStates(scheduler.scheduler_config.max_num_seqs)

    def execute(self, out: SchedulerOutput) -> ModelRunnerOutput:
        cfg = self.scheduler.scheduler_config
        assert out.num_scheduled_tokens == sum(s.num_new_tokens for s in out.scheduled)
        assert out.num_scheduled_tokens <= cfg.max_num_batched_tokens
        assert len(out.scheduled) <= cfg.max_num_seqs and self.scheduler.num_running <= cfg.max_num_seqs
        states = self.states.apply(out)
        assert len({st.row for st in states}) == len(states)  # one batch row each
        sampled, fed = {}, {}
        for s, state in zip(out.scheduled, states, strict=True):
            request = self.scheduler.requests[s.request_id]
            start, end = s.num_computed_tokens, s.num_computed_tokens + s.num_new_tokens
            tokens = state.all_token_ids[start:end]
            assert tokens and tokens == request.all_token_ids[start:end] and state.all_token_ids == request.all_token_ids
            block_ids = state.block_ids
            assert block_ids == self.scheduler.kv_cache_manager.get_block_ids(s.request_id)
            assert 0 not in block_ids and len(block_ids) == -(-end // BLOCK_SIZE)
            for pos in range(start):  # the context must already be in the KV cache
                assert self.kv.get(self._slot(block_ids, pos)) == request.all_token_ids[pos], (
                    s.request_id,
                    pos,
                )
            for pos in range(start, end):
                self.kv[self._slot(block_ids, pos)] = request.all_token_ids[pos]
            assert s.sample == (end == request.num_tokens)
            fed[s.request_id] = tokens
            if s.sample:
                sampled[s.request_id] = self.token_fn(request)
                state.all_token_ids.append(sampled[s.request_id])
        self.outputs.append(out)
        self.fed.append(fed)
        return ModelRunnerOutput(sampled_token_ids=sampled)

    @staticmethod
    def _slot(block_ids: list[int], pos: int) -> tuple[int, int]:
        return block_ids[pos // BLOCK_SIZE], pos % BLOCK_SIZE


def step(scheduler: Scheduler, runner: FakeRunner) -> tuple[SchedulerOutput, list[Request]]:
    out = scheduler.schedule()
    return out, scheduler.update_from_output(out, runner.execute(out))


def run_to_completion(scheduler: Scheduler, runner: FakeRunner, max_steps: int = 500) -> int:
    steps = 0
    while scheduler.has_unfinished_requests():
        step(scheduler, runner)
        steps += 1
        assert steps < max_steps, "scheduler made no progress"
    return steps


def assert_no_leak(scheduler: Scheduler) -> None:
    kv = scheduler.kv_cache_manager
    assert kv.num_free_blocks == kv.num_usable_blocks
    assert all(b.ref_cnt == 0 for b in kv.block_pool.blocks if not b.is_null)
    assert not kv.req_to_blocks and not scheduler.requests and not scheduler.running and not scheduler.waiting


def scheduled_ids(out: SchedulerOutput) -> list[str]:
    return [s.request_id for s in out.scheduled]


# ---- lifecycle ----------------------------------------------------------------------------------


def test_requests_finish_with_max_tokens_and_free_all_blocks() -> None:
    scheduler = make_scheduler()
    requests = [make_request(f"r{i}", 5 + i, max_tokens=3 + i) for i in range(4)]
    for r in requests:
        scheduler.add_request(r)
    run_to_completion(scheduler, FakeRunner(scheduler))
    for i, r in enumerate(requests):
        assert r.status == RequestStatus.FINISHED_LENGTH and r.output_token_ids == [FIXED_TOKEN] * (3 + i)
    assert_no_leak(scheduler)


def test_update_returns_sampled_requests_and_finished_ids_reach_the_runner() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    scheduler.add_request(make_request("long", 12, max_tokens=1))
    scheduler.add_request(make_request("short", 2, max_tokens=2))
    runner = FakeRunner(scheduler)
    out, updated = step(scheduler, runner)  # long: chunk of 8 (no sample); short waits for budget
    assert scheduled_ids(out) == ["long"] and updated == []
    out, updated = step(scheduler, runner)  # long: last 4 tokens, samples and finishes; short prefills
    assert [r.request_id for r in updated] == ["long", "short"] and updated[0].is_finished
    out, _ = step(scheduler, runner)
    assert out.finished_request_ids == ["long"] and scheduled_ids(out) == ["short"]


def test_stats() -> None:
    scheduler = make_scheduler(max_num_seqs=1)
    scheduler.add_request(make_request("a", 4))
    scheduler.add_request(make_request("b", 4))
    step(scheduler, FakeRunner(scheduler))
    stats = scheduler.stats()
    assert stats["num_running"] == 1 and stats["num_waiting"] == 1 and stats["num_preemptions"] == 0
    assert 0 < stats["kv_cache_usage"] < 1 and stats["prefix_cache_hit_rate"] == 0.0
    assert scheduler.get_num_unfinished_requests() == 2


# ---- rejection ----------------------------------------------------------------------------------


def test_prompt_larger_than_kv_cache_is_rejected_with_the_numbers() -> None:
    scheduler = make_scheduler(num_blocks=5, max_model_len=64)  # 4 usable blocks = 16 tokens
    with pytest.raises(RequestRejectedError) as exc:
        scheduler.add_request(make_request("big", 20, max_tokens=4))
    message = str(exc.value)
    for number in ("20", "max_tokens 4", "16 tokens", "block size 4", "max_model_len 64"):
        assert number in message
    with pytest.raises(RequestRejectedError):  # 10 + 8 - 1 = 17 KV tokens > 16
        scheduler.add_request(make_request("tight", 10, max_tokens=8))
    ok = make_request("ok", 10, max_tokens=7)  # 10 + 7 - 1 = 16 KV tokens: fits exactly
    scheduler.add_request(ok)
    run_to_completion(scheduler, FakeRunner(scheduler))
    assert ok.num_output_tokens == 7
    assert_no_leak(scheduler)


def test_request_longer_than_max_model_len_is_rejected() -> None:
    scheduler = make_scheduler(max_model_len=32)
    with pytest.raises(RequestRejectedError, match=r"35 tokens exceeds max_model_len.*max_model_len 32"):
        scheduler.add_request(make_request("a", 30, max_tokens=5))
    with pytest.raises(RequestRejectedError, match="empty"):
        scheduler.add_request(make_request("b", []))
    scheduler.add_request(make_request("c", 4))
    with pytest.raises(RequestRejectedError, match="already in use"):
        scheduler.add_request(make_request("c", 4))
    assert scheduler.get_num_unfinished_requests() == 1


# ---- chunked prefill and limits -----------------------------------------------------------------


def test_chunked_prefill_runs_alongside_decodes_within_budget() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    a, b = make_request("a", 3, max_tokens=12), make_request("b", 3, max_tokens=12)
    long = make_request("long", 30, max_tokens=2)
    for r in (a, b, long):
        scheduler.add_request(r)
    runner = FakeRunner(scheduler)
    out, _ = step(scheduler, runner)
    assert [s.num_new_tokens for s in out.scheduled] == [3, 3, 2]
    prefill_steps = 1
    while long.num_computed_tokens < long.num_prompt_tokens:
        out, _ = step(scheduler, runner)
        prefill_steps += 1
        sizes = {s.request_id: s.num_new_tokens for s in out.scheduled}
        assert sizes["a"] == sizes["b"] == 1  # decodes keep going every step
        assert sizes["long"] <= 6 and out.num_scheduled_tokens <= 8
    assert prefill_steps == 6  # 2 + 6 * 4 + 4 = 30
    run_to_completion(scheduler, runner)
    assert a.num_output_tokens == b.num_output_tokens == 12 and long.num_output_tokens == 2
    assert_no_leak(scheduler)


def test_max_num_seqs_is_respected() -> None:
    scheduler = make_scheduler(max_num_seqs=2)
    for i in range(5):
        scheduler.add_request(make_request(f"r{i}", 3, max_tokens=3))
    runner = FakeRunner(scheduler)
    run_to_completion(scheduler, runner)  # FakeRunner asserts the limit every step
    assert max(len(o.scheduled) for o in runner.outputs) == 2
    assert_no_leak(scheduler)


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=16, max_model_len=16, chunked=False)
    scheduler.add_request(make_request("a", 10, max_tokens=3))
    scheduler.add_request(make_request("b", 10, max_tokens=3))
    runner = FakeRunner(scheduler)
    out, _ = step(scheduler, runner)
    assert scheduled_ids(out) == ["a"] and out.num_scheduled_tokens == 10
    out, _ = step(scheduler, runner)
    assert scheduled_ids(out) == ["a", "b"] and [s.num_new_tokens for s in out.scheduled] == [1, 10]
    run_to_completion(scheduler, runner)
    assert_no_leak(scheduler)


# ---- preemption ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_preemption_under_memory_pressure_all_finish(prefix_caching: bool) -> None:
    scheduler = make_scheduler(num_blocks=7, prefix_caching=prefix_caching)  # 6 usable blocks
    requests = [make_request(f"r{i}", 6, max_tokens=10) for i in range(3)]  # each needs up to 4 blocks
    for r in requests:
        scheduler.add_request(r)
    runner = FakeRunner(scheduler)
    run_to_completion(scheduler, runner)
    assert (
        scheduler.num_preemptions > 0
        and sum(r.num_preemptions for r in requests) == scheduler.num_preemptions
    )
    assert any(o.preempted_request_ids for o in runner.outputs)
    for r in requests:
        assert r.status == RequestStatus.FINISHED_LENGTH and r.output_token_ids == [FIXED_TOKEN] * 10
    assert_no_leak(scheduler)


def test_preempted_request_resumes_by_recomputing_prompt_and_output() -> None:
    scheduler = make_scheduler(num_blocks=5)  # 4 usable blocks
    a, b = make_request("a", 4, max_tokens=9), make_request("b", 4, max_tokens=9)
    scheduler.add_request(a)
    scheduler.add_request(b)
    runner = FakeRunner(scheduler, token_fn=lambda r: r.num_output_tokens)  # outputs 0, 1, 2, ...
    while not runner.outputs or not runner.outputs[-1].preempted_request_ids:
        step(scheduler, runner)
    assert runner.outputs[-1].preempted_request_ids == ["b"] and b.status == RequestStatus.PREEMPTED
    assert b.num_computed_tokens == 0 and scheduler.waiting[0] is b
    run_to_completion(scheduler, runner)
    resumed = [(s, fed["b"]) for o, fed in zip(runner.outputs, runner.fed, strict=True) for s in o.scheduled
               if s.request_id == "b" and s.num_new_tokens > 1]
    assert len(resumed) == 2 and resumed[1][0].sample  # prompt + outputs recomputed (or cache-hit) at once
    assert resumed[1][0].num_computed_tokens == BLOCK_SIZE  # its own prompt block was a prefix-cache hit
    assert resumed[1][1] == b.output_token_ids[: resumed[1][0].num_new_tokens]
    # the runner heard of b once; the resume re-sent its whole block table as a diff
    assert sum(d.request_id == "b" for o in runner.outputs for d in o.new_requests) == 1
    assert a.output_token_ids == b.output_token_ids == list(range(9))
    assert_no_leak(scheduler)


# ---- prefix caching -----------------------------------------------------------------------------


def test_shared_prefix_through_the_scheduler() -> None:
    scheduler = make_scheduler()
    prefix = list(range(500, 500 + 3 * BLOCK_SIZE))
    a, b = make_request("a", prefix + [1, 2]), make_request("b", prefix + [3])
    runner = FakeRunner(scheduler)
    scheduler.add_request(a)
    step(scheduler, runner)
    scheduler.add_request(b)
    out, _ = step(scheduler, runner)
    assert b.num_cached_tokens == 3 * BLOCK_SIZE and runner.fed[-1]["b"] == [3]
    kv = scheduler.kv_cache_manager
    assert kv.get_block_ids("a")[:3] == kv.get_block_ids("b")[:3]
    run_to_completion(scheduler, runner)
    c = make_request("c", prefix + [4, 5])
    scheduler.add_request(c)
    step(scheduler, runner)
    assert c.num_cached_tokens == 3 * BLOCK_SIZE and scheduler.stats()["prefix_cache_hit_rate"] > 0
    run_to_completion(scheduler, runner)
    assert_no_leak(scheduler)


def test_identical_prompt_still_computes_its_last_block() -> None:
    scheduler = make_scheduler()
    prompt = list(range(300, 300 + 2 * BLOCK_SIZE))
    runner = FakeRunner(scheduler)
    scheduler.add_request(make_request("a", prompt))
    run_to_completion(scheduler, runner)
    b = make_request("b", prompt)
    scheduler.add_request(b)
    out, updated = step(scheduler, runner)
    assert b.num_cached_tokens == BLOCK_SIZE and out.scheduled[0].num_new_tokens == BLOCK_SIZE
    assert out.scheduled[0].sample and updated == [b]


def test_prompt_logprobs_disable_prefix_hits_and_mark_positions() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=4)
    prompt = list(range(700, 710))
    runner = FakeRunner(scheduler)
    scheduler.add_request(make_request("warm", prompt, max_tokens=1))
    run_to_completion(scheduler, runner)
    p = make_request("p", prompt, max_tokens=2, prompt_logprobs=1)
    scheduler.add_request(p)
    starts = [step(scheduler, runner)[0].scheduled[0].prompt_logprobs_start for _ in range(4)]
    assert p.num_cached_tokens == 0
    assert starts == [0, 4, 8, None]  # logits positions 0..8 score prompt tokens 1..9


# ---- stop conditions ----------------------------------------------------------------------------


def run_one(request: Request, tokens: list[int], **scheduler_kwargs: object) -> Request:
    scheduler = make_scheduler(**scheduler_kwargs)  # type: ignore[arg-type]
    scheduler.add_request(request)
    run_to_completion(scheduler, FakeRunner(scheduler, token_fn=lambda r: tokens[r.num_output_tokens]))
    assert_no_leak(scheduler)
    return request


def test_stop_token_ids() -> None:
    r = run_one(make_request("a", 3, max_tokens=8, stop_token_ids=[5]), [1, 2, 5, 3, 3, 3, 3, 3])
    assert (
        r.status == RequestStatus.FINISHED_STOPPED and r.stop_reason == 5 and r.output_token_ids == [1, 2, 5]
    )


def test_eos_and_ignore_eos() -> None:
    tokens = [1, 2, 9, 3, 3, 3]
    r = run_one(make_request("a", 3, max_tokens=6, eos_token_id=2), tokens)
    assert (
        r.status == RequestStatus.FINISHED_STOPPED and r.stop_reason is None and r.output_token_ids == [1, 2]
    )
    r = run_one(make_request("b", 3, max_tokens=6), tokens, eos_token_ids=(9,))  # the engine's EOS list
    assert r.status == RequestStatus.FINISHED_STOPPED and r.output_token_ids == [1, 2, 9]
    r = run_one(
        make_request("c", 3, max_tokens=6, eos_token_id=2, ignore_eos=True), tokens, eos_token_ids=(9,)
    )
    assert r.status == RequestStatus.FINISHED_LENGTH and r.output_token_ids == tokens
    r = run_one(make_request("d", 3, max_tokens=6, ignore_eos=True, stop_token_ids=[9]), tokens)
    assert r.status == RequestStatus.FINISHED_STOPPED and r.stop_reason == 9  # stop ids ignore ignore_eos


def test_min_tokens_delays_stops() -> None:
    r = run_one(make_request("a", 3, max_tokens=6, eos_token_id=2, min_tokens=2), [2, 2, 2, 2, 2, 2])
    assert r.status == RequestStatus.FINISHED_STOPPED and r.output_token_ids == [2, 2, 2]
    r = run_one(make_request("b", 3, max_tokens=6, min_tokens=3, stop_token_ids=[5]), [5, 1, 5, 5, 1, 1])
    assert r.status == RequestStatus.FINISHED_STOPPED and r.output_token_ids == [5, 1, 5, 5]


def test_max_tokens_gives_length() -> None:
    r = run_one(make_request("a", 3, max_tokens=3, eos_token_id=2), [1, 1, 1, 1])
    assert r.status == RequestStatus.FINISHED_LENGTH and r.status.finish_reason == "length"
    assert r.num_output_tokens == 3


# ---- aborts -------------------------------------------------------------------------------------


def test_abort_waiting_running_and_preempted_requests_frees_everything() -> None:
    scheduler = make_scheduler(num_blocks=9, max_num_seqs=3, max_num_batched_tokens=8)  # 8 usable blocks
    decode = make_request("decode", 3, max_tokens=20)
    prefill = make_request("prefill", 20, max_tokens=4)
    waiting = make_request("waiting", 3, max_tokens=4)
    hog = make_request("hog", 4, max_tokens=20)
    runner = FakeRunner(scheduler)
    for r in (decode, prefill, hog, waiting):
        scheduler.add_request(r)
    step(scheduler, runner)  # decode 3, prefill 5 (chunk); hog, waiting wait for budget
    assert prefill.status == RequestStatus.RUNNING and 0 < prefill.num_computed_tokens < 20
    assert scheduler.finish_requests("prefill") == [prefill]
    assert scheduler.finish_requests(["prefill", "unknown"]) == []  # idempotent
    assert scheduler.finish_requests("waiting", RequestStatus.FINISHED_STOPPED) == [waiting]
    assert waiting.status == RequestStatus.FINISHED_STOPPED
    while not hog.num_preemptions:  # decode and hog grow until one of them is preempted
        step(scheduler, runner)
    assert hog.status == RequestStatus.PREEMPTED
    scheduler.finish_requests("hog")
    step(scheduler, runner)
    assert {"prefill", "waiting", "hog"} == {i for o in runner.outputs for i in o.finished_request_ids}
    assert decode.status == RequestStatus.RUNNING and decode.num_output_tokens > 1
    scheduler.finish_requests(["decode"])  # mid-decode
    assert prefill.status == hog.status == decode.status == RequestStatus.FINISHED_ABORTED
    assert_no_leak(scheduler)


def test_abort_between_schedule_and_update_is_skipped() -> None:
    scheduler = make_scheduler()
    a, b = make_request("a", 3), make_request("b", 3)
    scheduler.add_request(a)
    scheduler.add_request(b)
    runner = FakeRunner(scheduler)
    out = scheduler.schedule()
    mro = runner.execute(out)
    scheduler.finish_requests("a")
    assert scheduler.update_from_output(out, mro) == [b]
    assert a.num_output_tokens == 0 and a.status == RequestStatus.FINISHED_ABORTED
    run_to_completion(scheduler, runner)
    assert_no_leak(scheduler)


# ---- randomized soak ----------------------------------------------------------------------------


def assert_ref_counts_consistent(scheduler: Scheduler) -> None:
    """Every block's ref_cnt equals the number of block tables holding it; free iff ref_cnt 0."""
    kv = scheduler.kv_cache_manager
    holders: dict[int, int] = {}
    for blocks in kv.req_to_blocks.values():
        for block in blocks:
            holders[block.block_id] = holders.get(block.block_id, 0) + 1
    for block in kv.block_pool.blocks[1:]:
        assert block.ref_cnt == holders.get(block.block_id, 0)
        assert (block.block_id in kv.block_pool.free_block_queue) == (block.ref_cnt == 0)
    assert set(kv.req_to_blocks) <= {r.request_id for r in scheduler.running}


@pytest.mark.parametrize("seed", range(4))
def test_random_workload_with_aborts_keeps_invariants(seed: int) -> None:
    rng = random.Random(seed)
    scheduler = make_scheduler(num_blocks=9, max_num_seqs=4, max_num_batched_tokens=10, max_model_len=40)
    runner = FakeRunner(scheduler, token_fn=lambda r: rng.randrange(50))
    prefixes = [list(range(k * 100, k * 100 + 8)) for k in range(3)]
    expected: dict[str, Request] = {}
    for i in range(60):
        if rng.random() < 0.5:
            prompt = rng.choice(prefixes)[: rng.randrange(1, 9)] + [
                rng.randrange(50) for _ in range(rng.randrange(6))
            ]
            request = make_request(f"q{i}", prompt or [1], max_tokens=rng.randrange(1, 19), eos_token_id=0)
            scheduler.add_request(request)
            expected[request.request_id] = request
        if rng.random() < 0.1 and scheduler.requests:
            scheduler.finish_requests(rng.choice(sorted(scheduler.requests)))
        step(scheduler, runner)
        assert_ref_counts_consistent(scheduler)
    run_to_completion(scheduler, runner)
    assert scheduler.num_preemptions > 0 and scheduler.kv_cache_manager.block_pool.num_hit_tokens > 0
    for request in expected.values():
        assert request.is_finished and request.num_output_tokens <= request.max_tokens
        if request.status == RequestStatus.FINISHED_LENGTH:
            assert request.num_output_tokens == request.max_tokens
    assert_no_leak(scheduler)


def test_scheduler_output_sends_a_request_once_then_diffs() -> None:
    scheduler = make_scheduler()
    runner = FakeRunner(scheduler)
    scheduler.add_request(make_request("a", 6, max_tokens=8))
    outs = [step(scheduler, runner)[0] for _ in range(8)]
    assert [len(o.new_requests) for o in outs] == [1] + [0] * 7
    new = outs[0].new_requests[0]
    assert new.request_id == "a" and len(new.prompt_token_ids) == 6 and new.sampling_params.max_tokens == 8
    # 6 prompt tokens fill 2 blocks of 4; decoding positions 6..12 adds a block at positions 8 and 12
    added = [o.scheduled[0].new_block_ids for o in outs]
    assert len(added[0]) == 2 and [len(b) for b in added[1:]] == [0, 0, 1, 0, 0, 0, 1]
    assert [o.scheduled[0].num_new_tokens for o in outs] == [6] + [1] * 7
    assert outs[-1].finished_request_ids == [] and scheduler.schedule().finished_request_ids == ["a"]
