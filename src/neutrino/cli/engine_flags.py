"""Engine flags shared by every subcommand that builds an engine."""

from __future__ import annotations

import argparse

from neutrino.engine.args import EngineArgs
from neutrino.errors import InvalidParameterError

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(text: str) -> int:
    """'512MiB', '2G', '1048576' -> bytes."""
    raw = text.strip().lower()
    num = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(num):].strip()
    try:
        value = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; expected e.g. 512MiB, 2GiB or a byte count") from None
    if unit not in _UNITS or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; expected e.g. 512MiB, 2GiB or a byte count")
    return int(value * _UNITS[unit])


def add_engine_flags(parser: argparse.ArgumentParser, model_positional: bool = True) -> None:
    """Register model/engine options on a subcommand parser."""
    if model_positional:
        parser.add_argument("model", nargs="?", default=None,
                            help="HF model directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    g = parser.add_argument_group("engine")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights and activations dtype (auto = bfloat16; float32 on CPUs without AVX-512)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--kv-cache-memory", type=parse_bytes, default=EngineArgs.kv_cache_memory,
                   help="bytes for the paged KV cache, e.g. 512MiB (default 2GiB)")
    g.add_argument("--num-blocks", type=int, default=None, help="force the number of KV cache blocks")
    g.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block")
    g.add_argument("--max-num-seqs", type=int, default=64, help="max running requests per step")
    g.add_argument("--max-num-batched-tokens", type=int, default=2048, help="token budget per step")
    g.add_argument("--max-model-len", type=int, default=None, help="max prompt + output tokens")
    g.add_argument("--no-prefix-caching", action="store_true", help="disable prefix caching")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument("--seed", type=int, default=0, help="seed for requests without their own seed")
    g.add_argument("--gguf-native", action="store_true",
                   help="run a GGUF's Q8_0/Q4_0/Q4_1 weights on the low-bit kernels instead of dequantizing "
                        "them (the default model then loads its packaged Q4_1 GGUF)")


def engine_args_from(ns: argparse.Namespace) -> EngineArgs:
    """EngineArgs from parsed flags."""
    for name in ("num_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "threads"):
        value = getattr(ns, name, None)
        if value is not None and value <= 0:
            raise InvalidParameterError("--" + name.replace("_", "-"), f"must be positive, got {value}")
    return EngineArgs(
        model=ns.model, dtype=ns.dtype, device=ns.device, kv_cache_memory=ns.kv_cache_memory,
        num_blocks=ns.num_blocks, block_size=ns.block_size, max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens, max_model_len=ns.max_model_len,
        enable_prefix_caching=not ns.no_prefix_caching, num_threads=ns.threads, seed=ns.seed,
        gguf_native=getattr(ns, "gguf_native", False),
    )


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Register sampling options."""
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=256, help="max new tokens")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--sampling-seed", type=int, default=None, help="per-request seed (reproducible)")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true")


def sampling_params_from(ns: argparse.Namespace):
    """SamplingParams from parsed flags (validated: a bad value raises InvalidParameterError)."""
    from neutrino.sampling_params import SamplingParams

    return SamplingParams(
        max_tokens=ns.max_tokens, temperature=ns.temperature, top_p=ns.top_p, top_k=ns.top_k, min_p=ns.min_p,
        repetition_penalty=ns.repetition_penalty, presence_penalty=ns.presence_penalty,
        frequency_penalty=ns.frequency_penalty, seed=ns.sampling_seed, stop=ns.stop, ignore_eos=ns.ignore_eos,
    )
