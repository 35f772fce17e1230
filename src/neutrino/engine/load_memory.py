"""Memory a model load leaves behind, given back once the engine is ready: the GGUF readers' maps of the
file (as large as the file, resident once read) and their parsed metadata, and the C heap's free pages
(the tokenizer's and the loaders' temporaries; glibc keeps them mapped until `malloc_trim`).

Measured on SmolLM2 Q4_0 (`--gguf-native`), 2 vCPU AMD EPYC, 2026-12-07: 753 -> 448 MiB resident after
load (the readers' 87 MiB map of the file and their parsed metadata; `malloc_trim` alone gave back ~76 MiB)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

logger = logging.getLogger(__name__)


def release_load_memory() -> None:
    from neutrino.weights.gguf_loader import release_readers

    release_readers()
    gc.collect()
    _malloc_trim()


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is None:  # not glibc: nothing to trim this way
        logger.debug("no malloc_trim in the C library (%s)", name)
        return
    trim(0)
