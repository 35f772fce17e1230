"""The transformers-free tokenizer gives the same ids, text and chat rendering as transformers' own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neutrino.errors import CheckpointError
from neutrino.weights import load_tokenizer
from neutrino.weights.fast_tokenizer import FastTokenizer, covers

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name 3 colours, é ü 日本"}],
    [{"role": "user", "content": "a <|im_end|> inside\n\n  spaced  "}],
]


@pytest.fixture(scope="module")
def pair(smollm2_dir: Path):
    from transformers import PreTrainedTokenizerFast

    return FastTokenizer(smollm2_dir), PreTrainedTokenizerFast.from_pretrained(str(smollm2_dir))


def _lines() -> list[str]:
    from neutrino.compression.evaluate.datasets import lee_text

    return [line for line in lee_text().splitlines() if line.strip()][:60] + ["", " ", "<|im_start|>x<|im_end|>"]


def test_the_default_model_loads_without_transformers(smollm2_dir: Path) -> None:
    assert covers(smollm2_dir)
    code = ("import sys; from neutrino.weights import load_tokenizer; "
            f"t = load_tokenizer({str(smollm2_dir)!r}); "
            "print(type(t).__name__, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["FastTokenizer", "False"]


def test_ids_and_text_match_transformers(pair) -> None:
    fast, ref = pair
    for line in _lines():
        for special in (True, False):
            ids = fast(line, add_special_tokens=special)["input_ids"]
            assert ids == ref(line, add_special_tokens=special)["input_ids"], line
        for skip in (True, False):
            assert fast.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    assert fast(["a b", "c"])["input_ids"] == ref(["a b", "c"])["input_ids"]


def test_special_tokens_match_transformers(pair) -> None:
    fast, ref = pair
    for name in ("bos_token", "eos_token", "pad_token", "unk_token", "bos_token_id", "eos_token_id",
                 "pad_token_id", "unk_token_id", "sep_token", "sep_token_id"):
        assert getattr(fast, name) == getattr(ref, name), name
    assert len(fast) == len(ref)
    assert fast.convert_ids_to_tokens([1, 2, 100]) == ref.convert_ids_to_tokens([1, 2, 100])
    with pytest.raises(AttributeError):
        fast.no_such_attribute  # noqa: B018


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(pair, conversation, add_generation_prompt: bool) -> None:
    fast, ref = pair
    kwargs = {"add_generation_prompt": add_generation_prompt}
    assert fast.apply_chat_template(conversation, tokenize=False, **kwargs) == \
        ref.apply_chat_template(conversation, tokenize=False, **kwargs)
    expected = ref.apply_chat_template(conversation, tokenize=True, **kwargs)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert fast.apply_chat_template(conversation, **kwargs) == list(expected)


def test_templates_are_sandboxed(smollm2_dir: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, tmp_path / name)
    (tmp_path / "chat_template.jinja").write_text("{{ messages.__class__.__mro__ }}")
    import jinja2

    with pytest.raises(jinja2.exceptions.SecurityError):
        FastTokenizer(tmp_path).apply_chat_template(CONVERSATIONS[0])
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('no system role') }}")
    with pytest.raises(jinja2.exceptions.TemplateError, match="no system role"):
        FastTokenizer(tmp_path).apply_chat_template(CONVERSATIONS[0])


def test_configs_it_does_not_cover_load_through_transformers(smollm2_dir: Path, tmp_path: Path) -> None:
    shutil.copy(smollm2_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    assert not covers(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert type(tok).__name__ != "FastTokenizer"
    assert tok.decode(tok("hi")["input_ids"], skip_special_tokens=True) == "hi"


def test_a_broken_tokenizer_json_names_the_path(smollm2_dir: Path, tmp_path: Path) -> None:
    shutil.copy(smollm2_dir / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: cannot load tokenizer"):
        load_tokenizer(tmp_path)
