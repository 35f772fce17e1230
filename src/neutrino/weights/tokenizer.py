"""Tokenizer loading from a local HF directory or a GGUF file (never from a hub)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from neutrino.errors import CheckpointError
from neutrino.weights import fast_tokenizer, gguf_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer for the model at `path`: an HF directory, or a `.gguf` file whose embedded
    vocabulary, merges, special tokens and `tokenizer.chat_template` are used. A directory whose tokenizer
    is the generic fast class loads without transformers (`fast_tokenizer.FastTokenizer`); a GGUF file's
    tokenizer is converted once and cached (`gguf_tokenizer`)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".gguf" and (cached := gguf_tokenizer.cached_dir(path)).is_dir():
        path = cached  # converted on an earlier load
    if path.is_dir() and fast_tokenizer.covers(path):
        try:
            return fast_tokenizer.FastTokenizer(path)  # type: ignore[return-value]  # the same API in part
        except Exception as e:  # tokenizers raises its own Exception for a malformed tokenizer.json
            raise CheckpointError(f"{path}: cannot load tokenizer ({type(e).__name__}: {e})") from e
    from transformers import AutoTokenizer

    try:
        if path.is_dir():
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        elif path.is_file() and path.suffix.lower() == ".gguf":
            tok = gguf_tokenizer.convert(path)
        else:
            raise CheckpointError(f"{path}: expected an HF model directory or a .gguf file for the tokenizer")
    except CheckpointError:
        raise
    except Exception as e:  # transformers raises OSError/ValueError/KeyError/... for broken inputs
        raise CheckpointError(f"{path}: cannot load tokenizer ({type(e).__name__}: {e})") from e
    if not getattr(tok, "is_fast", False):
        raise CheckpointError(f"{path}: tokenizer {type(tok).__name__} is not a fast (tokenizers) tokenizer")
    return tok  # type: ignore[return-value]  # is_fast checked above

