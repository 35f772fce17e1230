"""Evaluation texts: gensim's lee_background.cor, the cleaned Wikipedia excerpt, and the polarity file."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from neutrino.compression.evaluate import datasets
from neutrino.compression.evaluate.wikitext import clean_wikitext
from neutrino.errors import ConfigError


@pytest.fixture(scope="module")
def wiki() -> str:
    return datasets.wiki_text()


def test_lee_text() -> None:
    text = datasets.lee_text()
    lines = text.split("\n")
    assert len(lines) == 300 and all(line == line.strip() and line for line in lines)
    assert text.startswith("Hundreds of people have been forced to vacate their homes")


def test_wiki_articles_are_main_namespace_prose(wiki: str) -> None:
    articles = list(datasets.wiki_articles())
    assert len(articles) > 80
    title, body = articles[0]
    assert title == "Anarchism"
    assert body.startswith("Anarchism is a political philosophy that advocates self-governed societies")
    assert all(len(b.split()) >= datasets.MIN_ARTICLE_WORDS for _, b in articles)
    assert wiki.startswith("Anarchism\n\nAnarchism is a political philosophy")


@pytest.mark.parametrize("markup", ["{{cite", "{{", "<ref", "</ref>", "'''", "''", "==", "&lt;", "&amp;",
                                    "&quot;", "[[Category:", "|thumb|", "<!--", "http://", "https://"])
def test_wiki_text_has_no_markup(wiki: str, markup: str) -> None:
    assert wiki.count(markup) <= 2, markup  # a few literal uses remain (e.g. the ASCII article's table)


def test_clean_wikitext_rules() -> None:  # input as after XML parsing (one level of entities decoded)
    markup = (
        "{{Infobox|name={{nested|x}}}}'''Foo''' is a [[bar (thing)|bar]] and a [[baz]].<ref>{{cite web|url=x}}"
        "</ref> See [http://example.com the site].<!-- hidden -->\n"
        "[[File:Foo.jpg|thumb|A [[caption]] here]]\n== History ==\n* item one\n{| class=x\n| cell\n|}\n"
        "Ends &nbsp;here<ref name=a/>.\n== See also ==\n* [[Other]]\n[[Category:Things]]"
    )
    assert clean_wikitext(markup) == "Foo is a bar and a baz. See the site.\n\nHistory\nitem one\n\nEnds here."


def test_polarity_examples() -> None:
    examples = datasets.polarity_examples()
    assert len(examples) == 200
    assert sum(e.label == "positive" for e in examples) == 100
    assert sum(e.label == "negative" for e in examples) == 100
    assert examples[0] == datasets.LabelledSentence("simplistic, silly and tedious.", "negative")
    assert all(" ," not in e.text and " ." not in e.text for e in examples)


def test_polarity_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cor"
    bad.write_text("__label__neg fine\n__label__meh what\n", encoding="latin-1")
    with pytest.raises(ConfigError, match="bad.cor:2"):
        datasets.polarity_examples(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        datasets.polarity_examples(tmp_path / "missing.cor")


def test_wiki_dump_errors(tmp_path: Path) -> None:
    not_bz2 = tmp_path / "dump.bz2"
    not_bz2.write_text("plain text")
    with pytest.raises(ConfigError, match="bz2 MediaWiki"):
        datasets.wiki_text(not_bz2)
    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(bz2.compress(b"<mediawiki></mediawiki>"))
    with pytest.raises(ConfigError, match="no article"):
        datasets.wiki_text(empty)
