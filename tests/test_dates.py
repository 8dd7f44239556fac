"""Tests for the quickstart date corpus: determinism, correct targets, one date per source, splits."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from babel import Locale

from attnmt.datasets.dates import (
    DEFAULT_LOCALES,
    FIRST_DATE,
    LAST_DATE,
    all_sources,
    generate_pairs,
    numeric_layout,
    recase,
    write_corpus,
)


def test_same_seed_same_pairs_other_seed_other_pairs():
    assert generate_pairs(300, seed=7) == generate_pairs(300, seed=7)
    assert generate_pairs(300, seed=7) != generate_pairs(300, seed=8)


def test_targets_are_iso_dates_in_range_and_sources_carry_year_and_day():
    for source, target in generate_pairs(3000, seed=1):
        day = date.fromisoformat(target)
        assert target == day.isoformat() and FIRST_DATE <= day <= LAST_DATE
        assert source == source.strip() and source and "\n" not in source and "\t" not in source
        assert str(day.year) in source or f"{day.year % 100:02d}" in source, source
        assert str(day.day) in source, source


@pytest.mark.parametrize("day, expected", [
    (date(2009, 6, 25), ["Donnerstag, 25. Juni 2009", "June 25th, 2009", "25 juin 2009", "25.06.09", "6/25/2009",
                         "25/06/2009", "2009年6月25日", "25 de junio de 2009", "25 giugno 2009", "donderdag 25 juni 2009",
                         "quinta-feira, 25 de junho de 2009", "25th June 2009", "thursday, june 25, 2009"]),
    (date(1987, 3, 3), ["3 de marzo de 1987", "3/3/1987", "03.03.87", "3rd March 1987"]),
    (date(2001, 6, 1), ["le 1er juin 2001", "June 1st, 2001", "JUNE 1ST, 2001"]),
])
def test_familiar_spellings_are_produced(day, expected):
    sources = set(all_sources(day))
    assert set(expected) <= sources, set(expected) - sources


def test_title_case_leaves_ordinals_alone():
    assert recase("june 25th, 2009", "title") == "June 25th, 2009"
    assert recase("le 1er juin 2009", "title") == "Le 1er Juin 2009"


def test_numeric_day_month_order_never_contested():
    """03/04/2009 is March 4 in en and April 3 in fr: such a source must never be written."""
    day = date(2009, 4, 3)
    sources = all_sources(day)
    assert "03/04/2009" not in sources and "4/3/2009" not in sources and "3/4/2009" not in sources
    assert "03.04.2009" in sources  # dots are day-first in every locale here
    assert numeric_layout("dd/MM/y") == ("{N}/{N}/{Y}", "dMY")
    assert numeric_layout("d. MMMM y") is None


def test_every_source_names_one_date_exhaustively_over_two_years():
    """All styles and casings of every date of a 19xx and a 20xx year: no text names two dates."""
    first_date_of = {}
    for year in (1987, 2009):
        day = date(year, 1, 1)
        while day.year == year:
            for source in all_sources(day):
                assert first_date_of.setdefault(source, day) == day, f"{source!r}: {first_date_of[source]} and {day}"
            day += timedelta(days=1)


def test_every_source_names_one_date_in_a_large_sample():
    target_of = {}
    for source, target in generate_pairs(50_000, seed=3):
        assert target_of.setdefault(source, target) == target, f"{source!r}: {target_of[source]} and {target}"


def test_month_names_mean_the_same_month_in_every_locale():
    month_of = {}
    for name in DEFAULT_LOCALES:
        months = Locale.parse(name).months["format"]
        for width in ("wide", "abbreviated"):
            for number, month_name in months[width].items():
                assert month_of.setdefault(month_name.lower(), number) == number, (name, month_name)


def test_several_languages_present():
    sources = " ".join(source.lower() for source, _ in generate_pairs(3000, seed=5))
    for name in DEFAULT_LOCALES:
        wide_names = Locale.parse(name).months["format"]["wide"].values()
        assert any(month_name.lower() in sources for month_name in wide_names), name


def test_locale_selection():
    german = [source for source, _ in generate_pairs(200, seed=2, locales=["de"])]
    assert not any("/" in source for source in german)
    with pytest.raises(ValueError, match="unsupported"):
        generate_pairs(10, seed=0, locales=["xx"])


def test_write_corpus_aligned_files_and_splits_disjoint_by_date(tmp_path):
    prefixes = write_corpus(tmp_path, n_train=2000, n_valid=100, n_test=200, seed=4)
    assert set(prefixes) == {"train", "valid", "test"}
    lines = {}
    for split, prefix in prefixes.items():
        src = (tmp_path / f"{split}.src").read_text(encoding="utf-8").splitlines()
        trg = (tmp_path / f"{split}.trg").read_text(encoding="utf-8").splitlines()
        assert prefix == tmp_path / split
        assert len(src) == len(trg) == {"train": 2000, "valid": 100, "test": 200}[split]
        lines[split] = (src, trg)
    held_out_dates = set(lines["valid"][1]) | set(lines["test"][1])
    assert len(lines["test"][1]) == len(set(lines["test"][1]))  # each held-out date once
    assert not held_out_dates & set(lines["train"][1])
    assert not set(lines["valid"][1]) & set(lines["test"][1])
    assert not set(lines["train"][0]) & (set(lines["valid"][0]) | set(lines["test"][0]))


def test_write_corpus_is_deterministic(tmp_path):
    write_corpus(tmp_path / "a", 300, 20, 30, seed=9)
    write_corpus(tmp_path / "b", 300, 20, 30, seed=9)
    for name in ("train.src", "valid.trg", "test.src"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
