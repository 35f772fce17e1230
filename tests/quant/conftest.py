"""Fixtures for the quantized-checkpoint tests: RTN-quantized tiny checkpoints and their dequantized
dense twins (see `rtn.py`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from quant_helpers import FORMATS
from rtn import quantize_checkpoint

QuantPair = Callable[..., tuple[Path, Path]]


@pytest.fixture(autouse=True)
def exact_low_bit_kernels(monkeypatch) -> None:
    """These tests check formats against their dequantized twins to 1e-4, so the low-bit kernels run
    their exact path by default; the integer path (int8 activations, ~0.5 % error) is tested in
    test_quant_vnni.py, whose tests set `NEUTRINO_QUANT_EXACT` themselves."""
    monkeypatch.setenv("NEUTRINO_QUANT_EXACT", "1")


@pytest.fixture(scope="session")
def quant_pair(tiny_checkpoint, tmp_path_factory) -> QuantPair:
    """`quant_pair(fmt, family="llama", tokenizer=False, quantize_head=False, tie=None) -> (quantized_dir,
    dense_dir)`, built once per session and argument set from the float32 tiny checkpoint of `family`."""
    cache: dict[tuple, tuple[Path, Path]] = {}

    def make(fmt: str, family: str = "llama", tokenizer: bool = False, quantize_head: bool = False,
             tie: bool | None = None):
        key = (fmt, family, tokenizer, quantize_head, tie)
        if key not in cache:
            src = tiny_checkpoint(family, "float32", tie, tokenizer)
            out = tmp_path_factory.mktemp(f"{fmt}-{family}-tok{int(tokenizer)}-head{int(quantize_head)}-tie{tie}")
            quantize_checkpoint(src, out / "quant", out / "dense", family, quantize_head=quantize_head,
                                **FORMATS[fmt])
            cache[key] = (out / "quant", out / "dense")
        return cache[key]

    return make

