"""A GGUF file's tokenizer, converted by transformers once and cached as a tokenizer directory
(`weights/gguf_tokenizer.py`): later loads give the same ids, text, special tokens and chat rendering
without transformers, and a cache that cannot be written costs only the warning."""

from __future__ import annotations

import logging

from neutrino.weights import gguf_tokenizer
from neutrino.weights.fast_tokenizer import FastTokenizer
from neutrino.weights.tokenizer import load_tokenizer

TEXT = "Hello world, the quick brown fox.\nÜnïcode ✓ and  two spaces"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_converted_once_then_loaded_from_the_cache(smollm2_gguf, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NEUTRINO_CACHE_DIR", str(tmp_path))
    first = load_tokenizer(smollm2_gguf)
    cached = gguf_tokenizer.cached_dir(smollm2_gguf)
    assert cached.is_dir() and cached.parent.parent == tmp_path
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporary directory left
    second = load_tokenizer(smollm2_gguf)
    assert isinstance(second, FastTokenizer)
    ids = first(TEXT)["input_ids"]
    assert second(TEXT)["input_ids"] == ids and second.decode(ids) == first.decode(ids)
    assert (second.bos_token_id, second.eos_token_id) == (first.bos_token_id, first.eos_token_id)
    render = {"tokenize": False, "add_generation_prompt": True}
    assert second.apply_chat_template(CHAT, **render) == first.apply_chat_template(CHAT, **render)


def test_unwritable_cache_still_loads(smollm2_gguf, tmp_path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache root should be")
    monkeypatch.setenv("NEUTRINO_CACHE_DIR", str(blocker))
    caplog.set_level(logging.WARNING, logger="neutrino.weights.gguf_tokenizer")
    tok = load_tokenizer(smollm2_gguf)
    assert tok(TEXT)["input_ids"]
    assert "could not cache the tokenizer" in caplog.text
