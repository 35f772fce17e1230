"""A small, documented MediaWiki markup stripper for the Wikipedia evaluation text.

Steps, in order (`clean_wikitext`):
1. HTML entities are decoded (the XML parser decodes one level; `&amp;nbsp;` needs a second).
2. Comments, `<ref>...</ref>` / `<ref .../>`, and the content of `math`, `gallery`, `timeline`,
   `score`, `syntaxhighlight`, `source`, `pre` and `imagemap` tags are removed; other tags are dropped
   but their text kept.
3. Templates `{{...}}` and tables `{|...|}` are removed, innermost first (they nest).
4. Links `[[...]]`, innermost first: `File:`/`Image:`/`Category:` and interlanguage links are
   removed, `[[target|label]]` becomes `label`, `[[target]]` becomes `target`.
   External links `[url label]` become `label`; bare `[url]` is removed.
5. Bold/italic quotes are removed, and so are parentheses left empty (or opening with "," or ";") by
   removed templates; headings `== X ==` become the line `X`; list markers (`*#:;`) at
   the start of a line are removed; lines left with table or template residue (`|`, `!`, `{`, `}`)
   are dropped.
6. The article is cut at its first "See also", "References", "Notes", "Further reading",
   "External links", "Bibliography" or "Sources" heading (what follows is lists of citations).
7. Runs of spaces are collapsed, lines stripped, and runs of blank lines reduced to one.
"""

from __future__ import annotations

import html
import re

_DROP_TAGS = ("math", "gallery", "timeline", "score", "syntaxhighlight", "source", "pre", "imagemap")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*?/>|<ref[^>]*?>.*?</ref\s*>", re.S | re.I)
_DROP_ALT = "|".join(_DROP_TAGS)
_DROP_BLOCK = re.compile(rf"<({_DROP_ALT})\b[^>]*?>.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"</?[a-zA-Z][^<>]*?/?>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXT_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+(?:\s([^\]]*))?\]")
_QUOTES = re.compile(r"'{2,}")
_EMPTY_PARENS = re.compile(r" ?\([\s;,]*\)")
_PAREN_PUNCT = re.compile(r"\(\s*[;,][\s;,]*")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_END_SECTIONS = {"see also", "references", "notes", "further reading", "external links", "bibliography",
                 "sources", "notes and references", "footnotes"}
_DROP_LINK_PREFIXES = ("file:", "image:", "category:", "media:", "wikt:", "wiktionary:")
_INTERLANG = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)?:")


def clean_wikitext(markup: str) -> str:
    """Plain text of one article's wikitext (see the module docstring for the exact steps)."""
    text = html.unescape(markup)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _DROP_BLOCK.sub("", text)
    text = _TAG.sub("", text)
    text = _remove_nested(text, _TEMPLATE)
    text = _remove_nested(text, _TABLE)
    text = _replace_links(text)
    text = _EXT_LINK.sub(lambda m: m.group(1) or "", text)
    text = _QUOTES.sub("", text)
    text = _PAREN_PUNCT.sub("(", _EMPTY_PARENS.sub("", text))
    return _clean_lines(text)


def _remove_nested(text: str, pattern: re.Pattern[str]) -> str:
    while True:
        new = pattern.sub("", text)
        if new == text:
            return new
        text = new


def _link_text(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    low = target.strip().lower()
    if low.startswith(_DROP_LINK_PREFIXES) or _INTERLANG.match(low):
        return ""
    return (label.rsplit("|", 1)[-1] if label else target).strip()


def _replace_links(text: str) -> str:
    while True:
        new = _LINK.sub(_link_text, text)
        if new == text:
            return new
        text = new


def _clean_lines(text: str) -> str:
    lines: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        heading = _HEADING.match(line)
        if heading:
            if heading.group(2).strip().lower() in _END_SECTIONS:
                break
            line = heading.group(2)
        line = line.lstrip("*#:;").strip()
        if line.startswith(("|", "!", "{", "}")) or line.endswith(("}}", "|}")):
            continue
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()
