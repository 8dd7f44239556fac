"""Cleaning one line of text so that it stays one line and carries no invisible junk."""

from __future__ import annotations

import unicodedata

# Zero-width joiners change how text renders (emoji sequences, Persian, Indic scripts): keep them.
_KEPT_FORMAT_CHARS = frozenset("\u200c\u200d")
_SPACE_CATEGORIES = frozenset({"Cc", "Zs", "Zl", "Zp"})


def clean_line(line: str) -> str:
    """Normalise whitespace and strip control characters from one line of text.

    - control characters (category Cc: NUL, tab, CR, LF, vertical tab, file separators, NEL, ...),
      unicode spaces (no-break, thin, ideographic, ...) and line/paragraph separators become a space;
    - invisible format characters (category Cf: BOM, zero-width space, bidi marks, soft hyphen, ...)
      are removed, except the zero-width (non-)joiners, which carry meaning;
    - a lone surrogate (which no UTF-8 text holds, but a Python or JSON string can) becomes U+FFFD;
    - runs of whitespace collapse to one space; leading and trailing whitespace go.

    The result never contains a character that ``str.splitlines`` would split on.
    """
    if not line.isprintable():  # only ASCII space is whitespace among printable characters
        line = "".join(_clean_char(char) for char in line)
    return " ".join(line.split())


def _clean_char(char: str) -> str:
    category = unicodedata.category(char)
    if category in _SPACE_CATEGORIES:
        return " "
    if category == "Cf" and char not in _KEPT_FORMAT_CHARS:
        return ""
    if category == "Cs":
        return "\ufffd"
    return char
