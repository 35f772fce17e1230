"""Evaluation texts from gensim's bundled test data (gensim is installed with --no-deps; only its files
are read): `lee_background.cor`, the Wikipedia excerpt (a bz2 MediaWiki XML dump, cleaned by
`wikitext.clean_wikitext`) and `pang_lee_polarity.cor` (labelled sentences)."""

from __future__ import annotations

import bz2
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from neutrino.bench.workload import gensim_test_data
from neutrino.compression.evaluate.wikitext import clean_wikitext
from neutrino.errors import ConfigError

LEE_FILE = "lee_background.cor"
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
POLARITY_FILE = "pang_lee_polarity.cor"
MIN_ARTICLE_WORDS = 50  # cleaned articles shorter than this (stubs, lists) are skipped
POLARITY_LABELS = {"__label__neg": "negative", "__label__pos": "positive"}


@dataclass(frozen=True)
class LabelledSentence:
    """One polarity example: `label` is "positive" or "negative"."""

    text: str
    label: str


def lee_text(path: Path | None = None) -> str:
    """lee_background.cor: one news story per line; lines stripped, empty lines dropped, joined by "\\n"."""
    path = path or gensim_test_data(LEE_FILE)
    raw = _read(path, "utf-8")
    lines = [line.strip() for line in raw.splitlines()]
    text = "\n".join(line for line in lines if line)
    if not text:
        raise ConfigError(f"{path}: no text found")
    return text


def wiki_articles(path: Path | None = None) -> Iterator[tuple[str, str]]:
    """(title, cleaned text) of each main-namespace, non-redirect article of the dump, in dump order."""
    path = path or gensim_test_data(WIKI_FILE)
    try:
        with bz2.open(path, "rb") as f:
            for _, elem in ET.iterparse(f, events=("end",)):
                if _local(elem.tag) != "page":
                    continue
                article = _page_article(elem)
                elem.clear()
                if article is not None:
                    yield article
    except (OSError, EOFError, ET.ParseError) as e:
        raise ConfigError(f"{path}: not a readable bz2 MediaWiki XML dump ({type(e).__name__}: {e})") from e


def wiki_text(path: Path | None = None) -> str:
    """Cleaned articles joined as "Title\\n\\nbody" blocks separated by blank lines."""
    parts = [f"{title}\n\n{body}" for title, body in wiki_articles(path)]
    if not parts:
        raise ConfigError(f"{path or WIKI_FILE}: no article text found")
    return "\n\n".join(parts)


def polarity_examples(path: Path | None = None) -> list[LabelledSentence]:
    """pang_lee_polarity.cor (latin-1): lines `__label__neg text` / `__label__pos text`.

    The corpus is pre-tokenized ("it's funny , and sad ."); spaces before punctuation are removed."""
    path = path or gensim_test_data(POLARITY_FILE)
    examples = []
    for lineno, line in enumerate(_read(path, "latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        if tag not in POLARITY_LABELS or not text.strip():
            raise ConfigError(f"{path}:{lineno}: expected '__label__neg TEXT' or '__label__pos TEXT', "
                              f"got {line[:60]!r}")
        examples.append(LabelledSentence(_detokenize(text), POLARITY_LABELS[tag]))
    if not examples:
        raise ConfigError(f"{path}: no labelled sentences found")
    return examples


def _detokenize(text: str) -> str:
    out = " ".join(text.split())
    for punct in (" ,", " .", " !", " ?", " ;", " :", " )"):
        out = out.replace(punct, punct[1:])
    return out.replace("( ", "(")


def _read(path: Path, encoding: str) -> str:
    try:
        return Path(path).read_text(encoding=encoding)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the evaluation text ({e})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid {encoding} text ({e})") from e


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(elem: ET.Element, name: str) -> str | None:
    for child in elem.iter():
        if _local(child.tag) == name:
            return child.text
    return None


def _page_article(page: ET.Element) -> tuple[str, str] | None:
    if _child_text(page, "ns") != "0" or any(_local(c.tag) == "redirect" for c in page):
        return None
    title = (_child_text(page, "title") or "").strip()
    body = clean_wikitext(_child_text(page, "text") or "")
    if not title or len(body.split()) < MIN_ARTICLE_WORDS:
        return None
    return title, body
