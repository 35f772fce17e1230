"""The C++ low-bit kernels for CPU (`torch.ops.neutrino_quant.*`), compiled at install.

They live in the same library as the attention kernels (`neutrino/_kernels_<variant>.so`, sources
`neutrino/csrc/lowbit.cpp` and `w8a8.cpp`), loaded by `neutrino/kernels/loader.py` on first use. When it
can't be loaded, the loader says why once and `ops()` returns None: the quant methods then take their
torch paths (correct, slower). `NEUTRINO_DISABLE_CPP_KERNELS=1` disables these kernels too.
"""

from __future__ import annotations

from typing import Any

import torch

from neutrino.kernels import loader


def __getattr__(name: str):
    if name == "last_error":  # why the kernels are unavailable (for logs and test skip reasons)
        return loader.last_error
    raise AttributeError(name)


def ops() -> Any:
    """`torch.ops.neutrino_quant` (the library is loaded on the first call), or None when unavailable."""
    return None if loader.load() is None else torch.ops.neutrino_quant


def reset() -> None:
    """Forget the availability decision (re-reads NEUTRINO_DISABLE_CPP_KERNELS); for tests."""
    loader.reset()
