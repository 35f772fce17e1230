"""The tokenizer embedded in a GGUF file, converted once and cached as a tokenizer directory.

transformers builds it from the GGUF's metadata (vocabulary, merges, special tokens, chat template), which
means parsing every metadata field of the file again with gguf's reader: 9.0 s in all for SmolLM2's
49152-token vocabulary on a 2-vCPU AMD EPYC (2026-12-07, ~3.5 s of it the parse), on every load; from the
cache 0.16 s. The result is saved (`save_pretrained`) under
`<cache>/tokenizers/<key>`, the key naming the file by its resolved path, size and modification time, and
later loads read that directory (without transformers when `fast_tokenizer` covers it). The directory is
written to a temporary name and renamed into place, so a killed conversion leaves no half-written cache."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from neutrino.cache import cache_dir

logger = logging.getLogger(__name__)


def cached_dir(path: Path) -> Path:
    """Where the tokenizer of GGUF file `path` is (or will be) cached."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    return cache_dir() / "tokenizers" / f"{path.stem}-{key}"


def convert(path: Path) -> Any:
    """Build the tokenizer of GGUF file `path` with transformers and cache it (a failure to write the
    cache is logged and the tokenizer still returned)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    target = cached_dir(path)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        tok.save_pretrained(str(tmp))
        os.replace(tmp, target)
    except OSError as e:
        logger.warning("could not cache the tokenizer of %s in %s: %s", path, target, e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tok
