"""Reproducible benchmark workloads built from real bundled text (gensim's lee_background.cor)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from neutrino.errors import ConfigError


def gensim_test_data(name: str) -> Path:
    """Path of a file in gensim's test_data (gensim is installed with --no-deps; only its data is used)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise ConfigError("the benchmark text comes from gensim's test data: pip install --no-deps gensim")
    path = Path(spec.origin).parent / "test" / "test_data" / name
    if not path.exists():
        raise ConfigError(f"{path} not found in the installed gensim package")
    return path


def text_token_pool(tokenizer, min_tokens: int) -> list[int]:
    """Token ids of lee_background.cor (repeated if needed to reach min_tokens)."""
    text = gensim_test_data("lee_background.cor").read_text(encoding="utf-8", errors="replace")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    while len(ids) < min_tokens:
        ids = ids + ids
    return ids


def make_prompts(tokenizer, num: int, min_len: int, max_len: int, seed: int = 0) -> list[list[int]]:
    """`num` prompts of real text with lengths uniform in [min_len, max_len], from random offsets."""
    return slice_prompts(text_token_pool(tokenizer, max_len * 4), num, min_len, max_len, seed)


def slice_prompts(pool: list[int], num: int, min_len: int, max_len: int, seed: int = 0) -> list[list[int]]:
    """`num` slices of `pool` with lengths uniform in [min_len, max_len] from seeded random offsets."""
    if max_len >= len(pool):
        raise ConfigError(f"max_len {max_len} must be below the token pool's length {len(pool)}")
    rng = random.Random(seed)
    prompts = []
    for _ in range(num):
        length = rng.randint(min_len, max_len)
        start = rng.randrange(0, len(pool) - length)
        prompts.append(pool[start : start + length])
    return prompts
