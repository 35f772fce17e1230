"""Sampling: logits processors, the batched sampler and prompt logprobs."""

from neutrino.sample.prompt_logprobs import PromptTokenLogprobs, compute_prompt_logprobs
from neutrino.sample.sampler import Sampler, SamplerOutput, TokenLogprobs

__all__ = ["PromptTokenLogprobs", "Sampler", "SamplerOutput", "TokenLogprobs", "compute_prompt_logprobs"]
