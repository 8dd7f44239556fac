"""The built-in quickstart corpus: dates as people write them → ISO dates ("2009-06-25").

Sources are rendered from Babel's CLDR locale data: each locale's own ``full``/``long``/``medium``/
``short`` date formats plus a few hand-written patterns in CLDR syntax ("June 25th, 2009",
"le 1er juin 2009", "25.6.2009", "2009年6月25日(木)"), so month and weekday names, abbreviations and
word order come from CLDR rather than from lists typed here. Some sources are lower-, upper- or
title-cased.

Every source names exactly one date, so the task is a function a person could compute:

- Dates lie in 1950-01-01 … 2049-12-31, a 100-year window, so a two-digit year ("25.06.09") names
  one year: 50–99 → 1950–1999, 00–49 → 2000–2049. Two-digit years only ever come last.
- A numeric layout written with day-first in one locale and month-first in another ("25/06/2009"
  in French, "6/25/2009" in American English) is used only when the numbers themselves settle the
  order: the day is above 12, or day and month are equal. "03/04/2009" is never produced.

``write_corpus`` splits by date: a held-out date never appears in training, in any style, so the
test measures generalisation to unseen dates rather than recall.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date

FIRST_DATE = date(1950, 1, 1)
LAST_DATE = date(2049, 12, 31)
assert LAST_DATE.year - FIRST_DATE.year < 100, "two-digit years must name one year in the range"
DAYS_IN_RANGE = (LAST_DATE - FIRST_DATE).days + 1

ORDINAL_MARK = "#"  # quoted into hand-written patterns, replaced by the day's ordinal suffix
CLDR_FORMATS = ("full", "long", "medium", "short")

# Hand-written patterns (CLDR syntax) added to each locale's own four formats.
EXTRA_PATTERNS: dict[str, tuple[str, ...]] = {
    "en": ("MMMM d'#', y", "MMM d'#', y", "EEE, MMM d, y", "M/d/y", "MM/dd/y"),
    "en_GB": ("d'#' MMMM y", "EEEE d'#' MMMM y", "EEE d MMM y", "d/M/y", "dd/MM/yy"),
    "de": ("d. MMM y", "EEE, d. MMM y", "d.M.y", "d.M.yy"),
    "fr": ("d'#' MMMM y", "'le' d'#' MMMM y", "EEE d MMM y", "d/M/y", "dd/MM/yy"),
    "es": ("d-MMM-y", "d 'de' MMM 'de' y", "EEE, d 'de' MMMM 'de' y", "dd/MM/y"),
    "it": ("EEE d MMM y", "d/M/y", "dd/MM/y"),
    "nl": ("EEE d MMM y", "d-M-y", "dd-MM-yy"),
    "pt": ("EEE, d 'de' MMMM 'de' y", "d MMM y", "d/M/y", "dd/MM/yy"),
    "ja": ("y年M月d日(EEE)", "y年MM月dd日", "y/M/d"),
}
DEFAULT_LOCALES: tuple[str, ...] = tuple(EXTRA_PATTERNS)

# How often a source is re-cased; the rest keep CLDR's casing.
CASINGS: tuple[tuple[str, float], ...] = (("as_is", 0.70), ("lower", 0.15), ("upper", 0.10), ("title", 0.05))


def english_ordinal(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def french_ordinal(day: int) -> str:
    return "er" if day == 1 else ""  # "1er juin", "2 juin"


ORDINAL_SUFFIXES: dict[str, Callable[[int], str]] = {"en": english_ordinal, "fr": french_ordinal}


@dataclass(frozen=True)
class DateStyle:
    """One way to write a date: a CLDR pattern in one locale."""

    locale: Locale
    pattern: str
    order_settled_by_numbers: bool = False  # usable only when day > 12 or day == month

    def usable_for(self, day: date) -> bool:
        return not self.order_settled_by_numbers or day.day > 12 or day.day == day.month

    def render(self, day: date) -> str:
        text = format_date(day, self.pattern, locale=self.locale)
        if ORDINAL_MARK in text:
            text = text.replace(ORDINAL_MARK, ORDINAL_SUFFIXES[self.locale.language](day.day))
        return " ".join(text.split())  # CLDR may use no-break spaces; people type plain ones


def recase(text: str, casing: str) -> str:
    if casing == "lower":
        return text.lower()
    if casing == "upper":
        return text.upper()
    if casing == "title":  # str.title() would write "25Th"
        return re.sub(r"\b\w", lambda match: match.group().upper(), text)
    return text


def numeric_layout(pattern: str) -> tuple[str, str] | None:
    """(shape, field order) of a pattern whose month is a number, else None.

    The shape is the pattern with each 1–2 digit field written "N" and four-digit years "Y":
    "dd/MM/y" and "M/d/y" share the shape "N/N/Y" but order the day and month differently
    (orders "dMY" and "MdY"; a two-digit year is "y").
    """
    shape, order = [], []
    for token in re.findall(r"'[^']*'|y+|M+|L+|d+|.", pattern):
        letter = token[0].replace("L", "M")
        if letter in "yMd" and token[0] != "'":
            if letter == "M" and len(token) > 2:
                return None  # the month is a name: no day/month order to confuse
            four_digit_year = token == "y"
            shape.append("{Y}" if four_digit_year else "{N}")
            order.append("Y" if four_digit_year else letter)
        else:
            shape.append(token)
    return "".join(shape), "".join(order)


@cache
def styles_by_locale() -> dict[str, tuple[DateStyle, ...]]:
    """All styles of all supported locales, built once; numeric layouts that two locales write
    in different day/month orders are marked ``order_settled_by_numbers``."""
    patterns: dict[str, list[str]] = {}
    for name, extras in EXTRA_PATTERNS.items():
        locale = Locale.parse(name)
        cldr = [locale.date_formats[length].pattern for length in CLDR_FORMATS]
        patterns[name] = list(dict.fromkeys(cldr + list(extras)))  # drop repeats, keep order

    orders_by_shape: dict[str, set[str]] = defaultdict(set)
    for pattern in (p for ps in patterns.values() for p in ps):
        layout = numeric_layout(pattern)
        if layout:
            shape, order = layout
            assert "y" not in order[:-1], f"two-digit years must come last: {pattern!r}"
            orders_by_shape[shape].add(order)
    for shape, orders in orders_by_shape.items():
        assert len({frozenset(o) for o in orders}) == 1 and len(orders) <= 2, f"{shape!r}: {orders}"

    def is_contested(pattern: str) -> bool:
        layout = numeric_layout(pattern)
        return layout is not None and len(orders_by_shape[layout[0]]) > 1

    return {
        name: tuple(DateStyle(Locale.parse(name), p, is_contested(p)) for p in locale_patterns)
        for name, locale_patterns in patterns.items()
    }


def _styles_for(locales: Sequence[str]) -> list[tuple[DateStyle, ...]]:
    known = styles_by_locale()
    unknown = [name for name in locales if name not in known]
    if unknown or not locales:
        raise ValueError(f"unsupported locales {unknown or list(locales)}; choose from {', '.join(known)}")
    return [known[name] for name in locales]


def all_sources(day: date, locales: Sequence[str] = DEFAULT_LOCALES) -> list[str]:
    """Every source text the generator can write for ``day`` (all styles and casings)."""
    texts = [style.render(day) for styles in _styles_for(locales) for style in styles if style.usable_for(day)]
    return list(dict.fromkeys(recase(text, casing) for text in texts for casing, _ in CASINGS))


def _sample_source(day: date, rng: random.Random, locale_styles: list[tuple[DateStyle, ...]]) -> str:
    styles = [style for style in rng.choice(locale_styles) if style.usable_for(day)]
    casing = rng.choices([c for c, _ in CASINGS], weights=[w for _, w in CASINGS])[0]
    return recase(rng.choice(styles).render(day), casing)


def _pairs_for(days: Sequence[date], rng: random.Random, locales: Sequence[str]) -> list[tuple[str, str]]:
    locale_styles = _styles_for(locales)
    return [(_sample_source(day, rng, locale_styles), day.isoformat()) for day in days]


def generate_pairs(n: int, seed: int, locales: Sequence[str] = DEFAULT_LOCALES) -> list[tuple[str, str]]:
    """``n`` (source text, ISO date) pairs, dates uniform over FIRST_DATE … LAST_DATE; the same
    seed (and Babel version) gives the same pairs."""
    rng = random.Random(seed)
    days = [FIRST_DATE + timedelta(days=rng.randrange(DAYS_IN_RANGE)) for _ in range(n)]
    return _pairs_for(days, rng, locales)


def write_corpus(out_dir: Path, n_train: int, n_valid: int, n_test: int, seed: int,
                 locales: Sequence[str] = DEFAULT_LOCALES) -> dict[str, Path]:
    """Write ``{split}.src`` / ``{split}.trg`` for train, valid and test into ``out_dir`` and return
    each split's path prefix (``out_dir / split``), as ``DataConfig`` expects.

    Split by date: valid and test get ``n_valid`` and ``n_test`` distinct dates that training
    never sees; training samples its ``n_train`` pairs from the remaining dates.
    """
    if min(n_train, n_valid, n_test) < 0 or n_valid + n_test >= DAYS_IN_RANGE:
        raise ValueError(f"bad split sizes {n_train}/{n_valid}/{n_test} for {DAYS_IN_RANGE} dates")
    rng = random.Random(seed)
    offsets = list(range(DAYS_IN_RANGE))
    rng.shuffle(offsets)
    test_offsets, valid_offsets = offsets[:n_test], offsets[n_test : n_test + n_valid]
    train_pool = offsets[n_test + n_valid :]
    train_offsets = [rng.choice(train_pool) for _ in range(n_train)]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefixes = {}
    for split, split_offsets in (("train", train_offsets), ("valid", valid_offsets), ("test", test_offsets)):
        days = [FIRST_DATE + timedelta(days=offset) for offset in split_offsets]
        pairs = _pairs_for(days, rng, locales)
        prefix = out_dir / split
        for suffix, column in (("src", 0), ("trg", 1)):
            text = "".join(pair[column] + "\n" for pair in pairs)
            Path(f"{prefix}.{suffix}").write_text(text, encoding="utf-8", newline="\n")
        prefixes[split] = prefix
    return prefixes
