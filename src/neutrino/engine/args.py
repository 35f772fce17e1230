"""User-facing engine options (CLI flags map onto these one to one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineArgs:
    """Options for building an LLMEngine. `model` None means the embedded SmolLM2-135M-Instruct."""

    model: str | None = None
    dtype: str = "auto"  # auto (bfloat16; float32 on CPUs without AVX-512), float32, bfloat16, float16
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    block_size: int = 16
    kv_cache_memory: int = 2 * 1024**3  # bytes for the paged KV cache
    num_blocks: int | None = None  # force the number of KV blocks (overrides kv_cache_memory)
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None  # default: the model's context length
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    seed: int = 0  # seeds the sampler's generator for requests without their own seed
    attention_backend: str = "torch"
    num_threads: int | None = None  # CPU threads for torch (default: torch's choice)
    gguf_native: bool = False  # run a GGUF's Q8_0/Q4_0/Q4_1 tensors on the low-bit kernels (no dequantizing)
