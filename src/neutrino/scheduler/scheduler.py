"""Continuous-batching scheduler in the style of vLLM v1: no prefill/decode phases.

Each step every scheduled request computes tokens `[num_computed_tokens, num_computed_tokens + n)`
under a shared token budget; it samples a new token once it catches up with `num_tokens`. Chunked
prefill, prefix caching and recompute-after-preemption all fall out of that one rule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from neutrino.config import CacheConfig, SchedulerConfig
from neutrino.errors import RequestRejectedError
from neutrino.kv_cache.block_pool import KVCacheBlock
from neutrino.kv_cache.manager import KVCacheManager
from neutrino.request import Request, RequestStatus
from neutrino.scheduler.output import ModelRunnerOutput, NewRequestData, ScheduledRequest, SchedulerOutput
from neutrino.scheduler.stop import check_stop


class Scheduler:
    """Decides which tokens of which requests the model runner computes each step."""

    def __init__(
        self,
        scheduler_config: SchedulerConfig,
        cache_config: CacheConfig,
        num_blocks: int,
        eos_token_ids: Iterable[int] = (),
    ) -> None:
        self.scheduler_config = scheduler_config
        self.cache_config = cache_config
        self.kv_cache_manager = KVCacheManager(
            num_blocks, cache_config.block_size, cache_config.enable_prefix_caching
        )
        self.eos_token_ids = frozenset(eos_token_ids)  # model-level EOS ids, on top of request.eos_token_id
        self.requests: dict[str, Request] = {}  # every unfinished request by id
        self.waiting: deque[Request] = deque()  # WAITING and PREEMPTED requests, FCFS
        self.running: list[Request] = []  # RUNNING requests in admission order
        self.num_preemptions = 0  # total preemptions since start (metrics)
        self._finished_req_ids: list[str] = []  # freed since the last schedule()
        # request id -> first logits position whose prompt logprob is still owed (prompt_logprobs only)
        self._prompt_logprobs_next: dict[str, int] = {}
        # request id -> block ids the runner holds for it (absent: the runner has never seen it)
        self._sent_blocks: dict[str, int] = {}

    # ---- requests in and out --------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue a request, or raise `RequestRejectedError` if it can never be served."""
        self._check_admissible(request)
        request.status = RequestStatus.WAITING
        self.requests[request.request_id] = request
        self.waiting.append(request)
        if request.sampling_params.prompt_logprobs is not None:
            self._prompt_logprobs_next[request.request_id] = 0

    def finish_requests(
        self, request_ids: str | Iterable[str], status: RequestStatus = RequestStatus.FINISHED_ABORTED
    ) -> list[Request]:
        """Finish requests from outside (abort, stop string matched): waiting, preempted or running.

        Frees their blocks; unknown or already finished ids are ignored. Returns the requests finished.
        """
        if not status.finished:
            raise ValueError(f"finish_requests needs a finished status, got {status}")
        if isinstance(request_ids, str):
            request_ids = (request_ids,)
        finished = []
        for request_id in request_ids:
            request = self.requests.get(request_id)
            if request is None:
                continue
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            request.status = status
            self._release(request)
            finished.append(request)
        return finished

    def _check_admissible(self, request: Request) -> None:
        """Reject requests that could not fit even alone in an empty engine (they would hang)."""
        if request.request_id in self.requests:
            raise RequestRejectedError(f"request id {request.request_id!r} is already in use")
        kv = self.kv_cache_manager
        num_prompt, max_tokens = request.num_prompt_tokens, request.max_tokens
        max_model_len = self.scheduler_config.max_model_len
        # The last sampled token is never fed back, so the KV cache holds at most this many tokens.
        num_kv_tokens = num_prompt + max_tokens - 1
        if num_prompt == 0 or max_tokens < 1:
            reason = "the prompt is empty" if num_prompt == 0 else "max_tokens must be >= 1"
        elif num_prompt + max_tokens > max_model_len:
            reason = f"prompt + max_tokens = {num_prompt + max_tokens} tokens exceeds max_model_len"
        elif kv.blocks_needed(num_kv_tokens) > kv.num_usable_blocks:
            reason = f"it needs {kv.blocks_needed(num_kv_tokens)} KV blocks but the whole cache has {kv.num_usable_blocks}"
        else:
            return
        raise RequestRejectedError(
            f"request {request.request_id!r} can never be served: {reason} (prompt length {num_prompt} "
            f"tokens, max_tokens {max_tokens}, max_model_len {max_model_len}, KV cache capacity "
            f"{kv.capacity_tokens} tokens = {kv.num_usable_blocks} blocks x block size {kv.block_size})"
        )

    # ---- schedule -------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Build the next step's batch: running requests first (preempting the newest on memory
        pressure), then waiting requests FCFS while the token budget and `max_num_seqs` allow."""
        output = SchedulerOutput(finished_request_ids=self._finished_req_ids)
        self._finished_req_ids = []
        budget = self._schedule_running(output, self.scheduler_config.max_num_batched_tokens)
        if not output.preempted_request_ids:  # memory is short: admit nobody this step
            self._schedule_waiting(output, budget)
        return output

    def _schedule_running(self, output: SchedulerOutput, budget: int) -> int:
        """Schedule running requests in order; returns the token budget left."""
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self._allocate_or_preempt(request, num_new, output):
                break  # `request` itself was preempted; everything after it already was
            self._add_scheduled(output, request, num_new)
            budget -= num_new
            index += 1
        return budget

    def _allocate_or_preempt(self, request: Request, num_new: int, output: SchedulerOutput) -> bool:
        """Allocate slots for a running request, preempting the last running request until it fits.
        Returns False if `request` itself had to be preempted."""
        while self.kv_cache_manager.allocate_slots(request, num_new) is None:
            victim = self.running.pop()
            self._preempt(victim)
            output.preempted_request_ids.append(victim.request_id)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request) -> None:
        """Free a running request's blocks and requeue it at the front; it recomputes on resume."""
        self.kv_cache_manager.free(request)
        self._sent_blocks[request.request_id] = 0  # the runner empties its block table on preemption
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def _schedule_waiting(self, output: SchedulerOutput, budget: int) -> None:
        """Admit waiting requests FCFS until budget, `max_num_seqs` or free blocks run out."""
        while self.waiting and budget > 0 and len(self.running) < self.scheduler_config.max_num_seqs:
            num_new = self._try_admit(self.waiting[0], budget, output)
            if num_new is None:
                break
            budget -= num_new

    def _try_admit(self, request: Request, budget: int, output: SchedulerOutput) -> int | None:
        """Start (or resume) the head waiting request; returns its scheduled tokens, or None."""
        computed_blocks, num_cached = self._lookup_prefix(request)
        num_new = request.num_tokens - num_cached
        if num_new > budget:
            if not self.scheduler_config.enable_chunked_prefill:
                return None
            num_new = budget
        if self.kv_cache_manager.allocate_slots(request, num_new, computed_blocks) is None:
            return None
        self.waiting.popleft()
        if request.status == RequestStatus.WAITING:  # first admission, not a resume
            request.num_cached_tokens = num_cached
        request.num_computed_tokens = num_cached
        request.status = RequestStatus.RUNNING
        self.running.append(request)
        self._add_scheduled(output, request, num_new)
        return num_new

    def _lookup_prefix(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Prefix-cache hits, skipped for prompt_logprobs requests (their logits must be computed)."""
        if request.sampling_params.prompt_logprobs is not None:
            return [], 0
        return self.kv_cache_manager.get_computed_blocks(request)

    def _add_scheduled(self, output: SchedulerOutput, request: Request, num_new: int) -> None:
        """Append `request`'s share of this step to the output: its data the first time, then only the
        blocks the runner does not hold yet."""
        rid = request.request_id
        start, end = request.num_computed_tokens, request.num_computed_tokens + num_new
        block_ids = self.kv_cache_manager.get_block_ids(rid)
        sent = self._sent_blocks.get(rid)
        if sent is None:
            output.new_requests.append(NewRequestData(rid, list(request.prompt_token_ids), request.sampling_params,
                                                      request.eos_token_id))
            sent = 0
        self._sent_blocks[rid] = len(block_ids)
        output.scheduled.append(
            ScheduledRequest(
                request_id=rid,
                num_new_tokens=num_new,
                num_computed_tokens=start,
                new_block_ids=block_ids[sent:],
                sample=end == request.num_tokens,
                prompt_logprobs_start=self._prompt_logprobs_start(request, start, end),
            )
        )
        output.num_scheduled_tokens += num_new

    def _prompt_logprobs_start(self, request: Request, start: int, end: int) -> int | None:
        """First logits position in `[start, end)` whose prompt logprob is owed, or None.

        Logits at position p score prompt token p + 1, so owed positions end at num_prompt_tokens - 1;
        positions already delivered before a preemption are not owed again.
        """
        next_pos = self._prompt_logprobs_next.get(request.request_id)
        if next_pos is None:
            return None
        first = max(start, next_pos)
        return first if first < min(end, request.num_prompt_tokens - 1) else None

    # ---- update ---------------------------------------------------------------------------------

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> list[Request]:
        """Advance every scheduled request, append sampled tokens, finish stopped requests.

        Returns the requests that got a new token this step (finished ones included, with their
        final status); requests aborted since `schedule()` are skipped.
        """
        updated: list[Request] = []
        for scheduled in scheduler_output.scheduled:
            request = self.requests.get(scheduled.request_id)
            if request is None or request.status != RequestStatus.RUNNING:
                continue  # finished from outside between schedule() and now
            self._advance(request, scheduled)
            if scheduled.sample:
                self._append_sampled(request, model_runner_output)
                updated.append(request)
        if any(r.is_finished for r in updated):
            self.running = [r for r in self.running if not r.is_finished]
        return updated

    def _advance(self, request: Request, scheduled: ScheduledRequest) -> None:
        """Mark the scheduled tokens computed (and their prompt logprobs delivered)."""
        assert request.num_computed_tokens == scheduled.num_computed_tokens, request.request_id
        request.num_computed_tokens += scheduled.num_new_tokens
        if scheduled.prompt_logprobs_start is not None:
            owed_end = min(request.num_computed_tokens, request.num_prompt_tokens - 1)
            self._prompt_logprobs_next[request.request_id] = owed_end

    def _append_sampled(self, request: Request, model_runner_output: ModelRunnerOutput) -> None:
        """Append the sampled token and finish the request if it stops."""
        token_id = model_runner_output.sampled_token_ids.get(request.request_id)
        if token_id is None:
            raise RuntimeError(f"the model runner sampled no token for {request.request_id!r}")
        request.append_output_token(token_id)
        if check_stop(request, self.eos_token_ids, self.scheduler_config.max_model_len):
            self._release(request)

    def _release(self, request: Request) -> None:
        """Free a finished request's blocks and forget it (its status is already final)."""
        self.kv_cache_manager.free(request)
        del self.requests[request.request_id]
        self._prompt_logprobs_next.pop(request.request_id, None)
        self._sent_blocks.pop(request.request_id, None)
        self._finished_req_ids.append(request.request_id)

    # ---- introspection --------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Waiting plus preempted requests."""
        return len(self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def get_num_unfinished_requests(self) -> int:
        return len(self.requests)

    def reset_prefix_cache(self) -> bool:
        """Drop the prefix cache; False while any request holds KV blocks."""
        return self.kv_cache_manager.reset_prefix_cache()

    def stats(self) -> dict[str, Any]:
        """Gauges and counters for metrics and logs."""
        kv = self.kv_cache_manager
        return {
            "num_running": self.num_running,
            "num_waiting": self.num_waiting,
            "kv_cache_usage": kv.usage,
            "num_free_blocks": kv.num_free_blocks,
            "prefix_cache_hit_rate": kv.prefix_cache_hit_rate,
            "prefix_cache_queries": kv.block_pool.num_query_tokens,
            "prefix_cache_hits": kv.block_pool.num_hit_tokens,
            "num_preemptions": self.num_preemptions,
        }
