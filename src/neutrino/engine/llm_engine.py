"""LLMEngine: the synchronous step loop  schedule() -> execute() -> update_from_output() -> detokenize."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence

import torch

from neutrino.config import CacheConfig, ModelConfig, SchedulerConfig
from neutrino.engine.args import EngineArgs
from neutrino.engine.detokenizer import IncrementalDetokenizer
from neutrino.engine.limits import EngineInfo
from neutrino.engine.load_memory import release_load_memory
from neutrino.engine.request_state import ChildState, ParentState
from neutrino.errors import InvalidParameterError
from neutrino.models.catalog import get_model_class
from neutrino.outputs import RequestOutput, TokenLogprob
from neutrino.request import Request, RequestStatus
from neutrino.runner.device import resolve_device, resolve_dtype
from neutrino.runner.model_runner import ModelRunner
from neutrino.sampling_params import SamplingParams
from neutrino.scheduler.output import ModelRunnerOutput
from neutrino.scheduler.scheduler import Scheduler
from neutrino.weights.resolve import load_model_config, open_checkpoint, resolve_model
from neutrino.weights.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)


def _max_model_len(cfg: ModelConfig, requested: int | None) -> int:
    limit = cfg.max_position_embeddings
    if cfg.sliding_window:  # exact attention only while the context fits in the window
        limit = min(limit, cfg.sliding_window)
    if requested is None:
        return limit
    if requested <= 0 or requested > limit:
        raise InvalidParameterError("max_model_len", f"must be in [1, {limit}] for this model, got {requested}")
    return requested


class LLMEngine:
    """Owns tokenizer, scheduler and model runner; `step()` advances every running request by one token."""

    def __init__(self, args: EngineArgs) -> None:
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        self.args = args
        self.resolved = resolve_model(args.model, prefer_gguf=args.gguf_native)
        self.model_config = load_model_config(self.resolved)
        self.tokenizer = load_tokenizer(self.resolved.tokenizer_path or self.resolved.path)
        self.device = resolve_device(args.device)
        self.dtype = resolve_dtype(args.dtype, self.device)
        self.max_model_len = _max_model_len(self.model_config, args.max_model_len)
        self.cache_config = CacheConfig(args.block_size, args.kv_cache_memory, args.num_blocks,
                                        args.enable_prefix_caching)
        stacked = get_model_class(self.model_config.architecture).stacked_params
        weights, native = open_checkpoint(self.resolved, self.model_config, args.gguf_native, stacked)
        self.runner = ModelRunner(
            self.model_config, weights, self.cache_config, self.max_model_len,
            self.device, self.dtype, args.attention_backend, source=str(self.resolved.path), seed=args.seed,
            quant_spec=native, max_num_seqs=args.max_num_seqs,
        )
        sched_cfg = SchedulerConfig(args.max_num_seqs, args.max_num_batched_tokens,
                                    args.enable_chunked_prefill, self.max_model_len)
        self.eos_token_ids = self._eos_ids()
        self.scheduler = Scheduler(sched_cfg, self.cache_config, self.runner.num_blocks, self.eos_token_ids)
        self._parents: dict[str, ParentState] = {}
        self._children: dict[str, tuple[ParentState, ChildState]] = {}
        self._counter = itertools.count()
        self.info = EngineInfo(
            self.resolved.name, str(self.resolved.path), str(self.resolved.tokenizer_path or self.resolved.path),
            self.max_model_len, self.model_config.vocab_size, args.block_size,
            self.scheduler.kv_cache_manager.num_usable_blocks, args.max_num_seqs)
        release_load_memory()
        logger.info("engine ready: %s on %s (%s), %d KV blocks of %d tokens, max_model_len %d",
                    self.resolved.name, self.device, self.dtype, self.runner.num_blocks, args.block_size,
                    self.max_model_len)

    def _eos_ids(self) -> list[int]:
        ids = list(self.model_config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    # ---- requests -------------------------------------------------------------------------------
    def next_request_id(self) -> str:
        return f"req-{next(self._counter)}-{os.getpid()}"

    def tokenize(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a prompt string, or validated ids when given ids."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidParameterError("prompt", "must not be empty")
            return list(self.tokenizer(prompt)["input_ids"])
        return self.info.check_ids(prompt)

    def add_request(self, request_id: str, prompt: str | Sequence[int], params: SamplingParams | None = None) -> None:
        """Queue a request (n child sequences); raises if it is invalid or can never fit."""
        params = params or SamplingParams()
        if request_id in self._parents:
            raise InvalidParameterError("request_id", f"{request_id!r} is already in use")
        token_ids = self.tokenize(prompt)
        max_tokens = self._resolve_max_tokens(len(token_ids), params)
        children = [self._make_child(request_id, i, token_ids, params, max_tokens) for i in range(params.n)]
        parent = ParentState(request_id, prompt if isinstance(prompt, str) else None, token_ids, children,
                             [None] if params.prompt_logprobs is not None else None)
        for child in children:
            self.scheduler.add_request(child.request)
            self._children[child.request.request_id] = (parent, child)
        self._parents[request_id] = parent

    def validate_request(self, prompt: str | Sequence[int], params: SamplingParams) -> list[int]:
        """Tokenize and check a request without queuing it; raises what `add_request` would for a bad
        prompt or one that can never fit. Reads no mutable state, so another thread may call it with
        token ids (a string prompt uses this engine's tokenizer)."""
        return self.info.check(self.tokenize(prompt), params)

    def _resolve_max_tokens(self, prompt_len: int, params: SamplingParams) -> int:
        return self.info.max_tokens(prompt_len, params)

    def _make_child(self, parent_id: str, index: int, token_ids: list[int], params: SamplingParams,
                    max_tokens: int) -> ChildState:
        child_params = params.child(index) if params.n > 1 else params.child(0)
        rid = parent_id if params.n == 1 else f"{parent_id}#{index}"
        eos = self.eos_token_ids[0] if self.eos_token_ids else None
        req = Request(rid, token_ids, child_params, eos_token_id=eos, max_tokens=max_tokens)
        detok = IncrementalDetokenizer(self.tokenizer, token_ids, child_params.skip_special_tokens,
                                       child_params.stop, child_params.include_stop_str_in_output)
        return ChildState(req, index, detok, [] if child_params.logprobs is not None else None)

    def abort_request(self, request_ids: str | Sequence[str]) -> None:
        """Stop requests now and free their KV blocks; unknown or finished ids are ignored."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        for rid in ids:
            parent = self._parents.pop(rid, None)
            if parent is None:
                continue
            child_ids = [c.request.request_id for c in parent.children]
            self.scheduler.finish_requests(child_ids, RequestStatus.FINISHED_ABORTED)
            for cid in child_ids:
                self._children.pop(cid, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self._parents)

    def get_num_unfinished_requests(self) -> int:
        return len(self._parents)

    # ---- the step loop ---------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once, sample, detokenize; returns outputs of requests that changed."""
        sched_out = self.scheduler.schedule()
        if sched_out.is_empty:
            return []
        runner_out = self.runner.execute(sched_out)
        self._record_prompt_logprobs(runner_out)
        updated = self.scheduler.update_from_output(sched_out, runner_out)
        touched: dict[str, ParentState] = {}
        for req in updated:
            entry = self._children.get(req.request_id)
            if entry is None:
                continue
            parent, child = entry
            self._process_child(child, runner_out)
            touched[parent.request_id] = parent
        return [self._emit(parent) for parent in touched.values()]

    def _process_child(self, child: ChildState, runner_out: ModelRunnerOutput) -> None:
        req = child.request
        token = runner_out.sampled_token_ids.get(req.request_id)
        if token is not None:
            child.delta_token_ids.append(token)
            lp = runner_out.logprobs.get(req.request_id)
            if lp is not None and child.logprobs is not None:
                child.logprobs.append(TokenLogprob(token, lp[0], lp[1]))
                child.cumulative_logprob += lp[0]
            # Like vLLM: a stop token (EOS or stop_token_ids) stays in token_ids but not in the text.
            stopped_by_token = (req.status == RequestStatus.FINISHED_STOPPED
                                and not isinstance(req.stop_reason, str)
                                and not req.sampling_params.include_stop_str_in_output)
            delta, stop = child.detokenizer.update([] if stopped_by_token else [token])
            child.delta_text += delta
            if stop is not None:
                req.stop_reason = stop
                if req.is_finished:  # the same token also hit max_tokens: the stop string wins, as in vLLM
                    req.status = RequestStatus.FINISHED_STOPPED
                else:
                    self.scheduler.finish_requests([req.request_id], RequestStatus.FINISHED_STOPPED)
        if req.is_finished and not isinstance(req.stop_reason, str):
            child.delta_text += child.detokenizer.flush()  # release text held back for stop matching

    def _record_prompt_logprobs(self, runner_out: ModelRunnerOutput) -> None:
        for rid, (first_pos, entries) in runner_out.prompt_logprobs.items():
            entry = self._children.get(rid)
            if entry is None or entry[0].prompt_logprobs is None or entry[1].index != 0:
                continue
            plp = entry[0].prompt_logprobs
            for offset, (tok, lp, top) in enumerate(entries):
                if first_pos + offset == len(plp):  # skip positions recomputed after preemption
                    plp.append(TokenLogprob(tok, lp, top))

    def _emit(self, parent: ParentState) -> RequestOutput:
        out = parent.output()
        if out.finished:
            self._parents.pop(parent.request_id, None)
            for child in parent.children:
                self._children.pop(child.request.request_id, None)
        return out
