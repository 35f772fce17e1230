"""A tokenizer straight over `tokenizers` and a sandboxed Jinja chat template, for the common checkpoint whose
tokenizer is the generic fast class over `tokenizer.json` (the embedded model's is).

It gives the same ids, text and chat rendering as transformers' `PreTrainedTokenizerFast` for such a
directory (tests/unit/test_fast_tokenizer.py checks it against it) without importing transformers, whose
import alone takes about 1.8 s (2-vCPU AMD EPYC, 2026-12-03): the larger part of a later `neutrino generate`.
Directories it does not cover exactly (added BOS/EOS flags, clean-up of spaces, several named templates)
keep loading through transformers (`covers`)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
PLAIN_FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
_FLAGS_NEEDING_TRANSFORMERS = ("add_bos_token", "add_eos_token", "clean_up_tokenization_spaces")


def read_tokenizer_config(path: Path) -> dict[str, Any] | None:
    """`tokenizer_config.json` of directory `path` as a dict, or None when absent or unreadable."""
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def covers(path: Path) -> bool:
    """True when `FastTokenizer` reproduces transformers' tokenizer for directory `path` exactly."""
    config = read_tokenizer_config(path)
    if config is None or not (path / "tokenizer.json").is_file():
        return False
    if config.get("tokenizer_class") not in PLAIN_FAST_CLASSES:
        return False
    if any(config.get(flag) for flag in _FLAGS_NEEDING_TRANSFORMERS):
        return False
    return not isinstance(config.get("chat_template"), list)


def _token_text(value: Any) -> str | None:
    """A special token as written in the config: a string or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class FastTokenizer:
    """The part of the transformers tokenizer API the engine uses: call/encode, decode, special tokens,
    `chat_template` and `apply_chat_template`."""

    is_fast = True

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.name_or_path = str(path)
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config = read_tokenizer_config(path) or {}
        self.special_tokens_map = {
            key: text for key in SPECIAL_TOKEN_KEYS if (text := _token_text(config.get(key))) is not None
        }
        template_file = path / "chat_template.jinja"
        template = config.get("chat_template")
        if template_file.is_file():
            template = template_file.read_text(encoding="utf-8")
        self.chat_template: str | None = template if isinstance(template, str) else None
        self._compiled: Any = None

    def __getattr__(self, name: str) -> Any:
        """`bos_token`, `eos_token_id`, ...: the named special tokens and their ids (None when unset)."""
        key = name[: -len("_id")] if name.endswith("_id") else name
        if key not in SPECIAL_TOKEN_KEYS:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        text = self.__dict__.get("special_tokens_map", {}).get(key)
        if name == key or text is None:
            return text
        return self._tokenizer.token_to_id(text)

    def __len__(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        if isinstance(text, str):
            return {"input_ids": self.encode(text, add_special_tokens)}
        batch = self._tokenizer.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [list(e.ids) for e in batch]}

    def decode(self, token_ids: int | list[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """`clean_up_tokenization_spaces` is accepted for compatibility; `covers` admits only configs
        where transformers does not clean up either."""
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return str(self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self._tokenizer.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int | None]:
        return [self._tokenizer.token_to_id(t) for t in tokens]

    def get_vocab(self) -> dict[str, int]:
        return dict(self._tokenizer.get_vocab(with_added_tokens=True))

    def apply_chat_template(self, conversation: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = True, tools: list[dict[str, Any]] | None = None,
                            **kwargs: Any) -> str | list[int]:
        """The conversation rendered as transformers renders it (special tokens passed to the template,
        the text then encoded without adding special tokens)."""
        if self.chat_template is None:
            raise ValueError(f"{self.name_or_path}: the tokenizer has no chat template")
        if not conversation:
            raise ValueError("Cannot apply chat template to an empty conversation")
        if self._compiled is None:
            self._compiled = compile_chat_template(self.chat_template)
        text = self._compiled.render(messages=[dict(m) for m in conversation], tools=tools, documents=None,
                                     add_generation_prompt=add_generation_prompt,
                                     **{**self.special_tokens_map, **kwargs})
        return self.encode(text, add_special_tokens=False) if tokenize else str(text)


def compile_chat_template(source: str) -> Any:
    """A Jinja template in the sandbox chat templates expect: trimmed blocks, loop controls, `tojson`
    without HTML escaping, `raise_exception`, `strftime_now`; templates are untrusted code."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)
