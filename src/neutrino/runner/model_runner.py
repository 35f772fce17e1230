"""Owns the model and the KV cache tensors on the device; runs one scheduled step."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from neutrino.config import CacheConfig, ModelConfig
from neutrino.errors import ConfigError
from neutrino.layers.attention import cpu_kernels
from neutrino.layers.attention.backend import ATTENTION_BACKENDS
from neutrino.layers.quant import dense_tuning
from neutrino.layers.quant.config import QuantConfig
from neutrino.layers.quant.registry import LinearQuant, NativeFormats, quant_config_of
from neutrino.models.base import CausalLM
from neutrino.models.catalog import get_model_class
from neutrino.runner.input_batch import InputBatch, PersistentBatch, build_input_batch
from neutrino.runner.request_states import CachedRequestState, RequestStates
from neutrino.sample.prompt_logprobs import compute_prompt_logprobs
from neutrino.sample.sampler import Sampler
from neutrino.sampling_params import SamplingParams
from neutrino.scheduler.output import ModelRunnerOutput, NewRequestData, ScheduledRequest, SchedulerOutput
from neutrino.weights.hf import checkpoint_tensor_names

logger = logging.getLogger(__name__)


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block of K and V takes across all layers."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * block_size * cfg.num_key_value_heads * cfg.head_dim * elem


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero tensor; on CPU from calloc'd memory, whose pages the OS maps (zeroed) only when first
    written: a 2 GiB KV cache then costs no start-up time (torch.zeros wrote it all: 2.5 s) and no
    resident memory beyond the blocks in use."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    import numpy as np

    nbytes = torch.empty((), dtype=dtype).element_size() * int(np.prod(shape))
    return torch.from_numpy(np.zeros(nbytes, dtype=np.uint8)).view(dtype).view(shape)


class ModelRunner:
    """Builds the model, loads weights, allocates the paged KV cache and executes SchedulerOutputs."""

    def __init__(
        self,
        model_config: ModelConfig,
        weights: Iterable[tuple[str, torch.Tensor]],
        cache_config: CacheConfig,
        max_model_len: int,
        device: torch.device,
        dtype: torch.dtype,
        attention_backend: str = "torch",
        source: str = "checkpoint",
        seed: int = 0,
        quant_spec: QuantConfig | NativeFormats | None = None,
        max_num_seqs: int = 256,
    ) -> None:
        self.model_config = model_config
        self.device, self.dtype = device, dtype
        self.block_size = cache_config.block_size
        backend = ATTENTION_BACKENDS.get(attention_backend)()
        model_cls = get_model_class(model_config.architecture)
        spec = quant_spec if quant_spec is not None else quant_config_of(model_config, f"{source}/config.json")
        quant = LinearQuant(spec, model_cls.stacked_params, source) if spec is not None else None
        with torch.device(device):
            self.model: CausalLM = model_cls(model_config, dtype, backend, max_model_len, quant=quant)
            if quant is not None:
                names = checkpoint_tensor_names(source) if isinstance(spec, QuantConfig) else None
                quant.prepare_model(self.model, names)
        self.model.load_weights(weights, source)
        self.model.eval()
        self.num_blocks = self._num_blocks(cache_config)
        shape = (2, self.num_blocks, self.block_size, model_config.num_key_value_heads, model_config.head_dim)
        self.kv_caches = [lazy_zeros(shape, dtype, device) for _ in range(model_config.num_hidden_layers)]
        self.sampler = Sampler(seed)
        self.max_blocks_per_seq = -(-max_model_len // self.block_size)
        self.states = RequestStates(max_num_seqs)
        self.batch = PersistentBatch(max_num_seqs, self.max_blocks_per_seq)
        if device.type == "cpu":
            cpu_kernels.warmup()  # load the C++ kernels (and log their variant) now, not in the first request
            dense_tuning.tune(self.model)  # measured here, per weight shape (cached)

    def _num_blocks(self, cache_config: CacheConfig) -> int:
        if cache_config.num_blocks is not None:
            return cache_config.num_blocks
        per_block = kv_bytes_per_block(self.model_config, self.block_size, self.dtype)
        n = cache_config.kv_cache_memory // per_block
        if n < 2:
            raise ConfigError(
                f"kv_cache_memory={cache_config.kv_cache_memory} bytes holds {n} blocks of {per_block} bytes; "
                "expected room for at least 2 blocks"
            )
        return int(n)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> ModelRunnerOutput:
        """Apply the step's diffs to the request states, run the forward pass for every scheduled token,
        then sample where requested (recording the sampled tokens in the states)."""
        states = self.states.apply(out)
        batch = build_input_batch(out, states, self.batch, self.block_size, self.device)
        hidden = self.model(batch.input_ids, batch.positions, self.kv_caches, batch.meta)  # [T, hidden]
        result = ModelRunnerOutput()
        if batch.sample_indices:
            self._sample(hidden, batch, result)
        for i, (sched, state) in enumerate(zip(out.scheduled, states, strict=True)):
            if sched.prompt_logprobs_start is not None:
                self._prompt_logprobs(hidden, batch, i, sched, state, result)
        return result

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        """Float32 logits [len(token_ids), vocab] of one sequence, computed in a private KV cache
        (for evaluation and tests; does not touch the serving cache or the serving request states)."""
        num_blocks = -(-len(token_ids) // self.block_size)
        cfg = self.model_config
        shape = (2, num_blocks, self.block_size, cfg.num_key_value_heads, cfg.head_dim)
        caches = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(cfg.num_hidden_layers)]
        sched = ScheduledRequest("score", len(token_ids), 0, list(range(num_blocks)), sample=False)
        out = SchedulerOutput([sched], len(token_ids), [NewRequestData("score", list(token_ids), SamplingParams(), None)])
        states = RequestStates(1).apply(out)
        batch = build_input_batch(out, states, PersistentBatch(1, num_blocks), self.block_size, self.device)
        hidden = self.model(batch.input_ids, batch.positions, caches, batch.meta)
        return self.model.compute_logits(hidden)

    def _sample(self, hidden: torch.Tensor, batch: InputBatch, result: ModelRunnerOutput) -> None:
        idx = torch.tensor(batch.sample_indices, device=hidden.device)
        logits = self.model.compute_logits(hidden[idx])  # [num_sampled, vocab] float32
        reqs = [self.states[rid] for rid in batch.sample_request_ids]
        sampled = self.sampler(logits, reqs)
        for req, token, lp in zip(reqs, sampled.token_ids, sampled.logprobs, strict=True):
            req.all_token_ids.append(token)
            result.sampled_token_ids[req.request_id] = token
            if lp is not None:
                result.logprobs[req.request_id] = lp

    def _prompt_logprobs(self, hidden: torch.Tensor, batch: InputBatch, i: int, sched: ScheduledRequest,
                         req: CachedRequestState, result: ModelRunnerOutput) -> None:
        """Logprobs of prompt tokens p+1 for logits positions p computed in this step and still owed."""
        computed = sched.num_computed_tokens
        first = max(sched.prompt_logprobs_start or 0, computed)
        last = min(computed + sched.num_new_tokens, req.num_prompt_tokens - 1)  # exclusive
        if last <= first:
            return
        base = batch.meta.query_start_loc[i] + first - computed
        logits = self.model.compute_logits(hidden[base : base + last - first])  # [n, vocab]
        targets = req.prompt_token_ids[first + 1 : last + 1]
        k = req.sampling_params.prompt_logprobs or 0
        result.prompt_logprobs[sched.request_id] = (first + 1, compute_prompt_logprobs(logits, targets, k))
