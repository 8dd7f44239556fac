"""attnmt.data.text and attnmt.data.corpus: one line in, one line out; clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnmt.data.corpus import (
    CorpusError,
    count_lines,
    filter_pairs,
    read_lines,
    read_parallel,
    resolve_split,
    split_lines,
)
from attnmt.data.text import clean_line

# characters that str.splitlines splits on, and other troublemakers
AWKWARD = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r\t\x00\ufeff\xa0\u200b"
file_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


# ---- clean_line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\ufeffHello world\r", "Hello world"),
        ("a\tb\x00c", "a b c"),
        ("  a \xa0\u2009\u3000 b  ", "a b"),
        ("one\u2028two\x0bthree\x1cfour\x85five", "one two three four five"),
        ("zero\u200bwidth\u200e marks\u00ad", "zerowidth marks"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),  # joiners kept
        ("Ein Mann läuft.", "Ein Mann läuft."),
        ("\r\n\t ", ""),
    ],
)
def test_clean_line_examples(raw: str, clean: str) -> None:
    assert clean_line(raw) == clean


@given(st.text(alphabet=st.characters() | st.sampled_from(AWKWARD)))
def test_clean_line_is_one_clean_line(text: str) -> None:
    cleaned = clean_line(text)
    assert "\n" not in cleaned
    assert len(cleaned.splitlines()) <= 1
    assert cleaned == cleaned.strip() and "  " not in cleaned
    assert clean_line(cleaned) == cleaned


# ---- read_lines / count_lines --------------------------------------------------------------------

line_text = st.text(
    alphabet=st.characters(exclude_characters="\n", exclude_categories=("Cs",)) | st.sampled_from(AWKWARD)
)


@file_settings
@given(lines=st.lists(line_text.filter(lambda s: not s.endswith("\r"))), trailing=st.booleans(), gz=st.booleans())
def test_read_lines_round_trip(tmp_path: Path, lines: list[str], trailing: bool, gz: bool) -> None:
    """Whatever the lines hold besides \\n, the file has exactly as many lines when read back."""
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = "x" + lines[0]  # a BOM at the very start is an encoding mark, not text
    if not trailing and lines and lines[-1] == "":
        lines.append("last")  # without a final line end, an empty last line is no line
    data = "\n".join(lines) + ("\n" if trailing and lines else "")
    path = write(tmp_path / ("text.gz" if gz else "text.txt"), data.encode("utf-8"))
    assert read_lines(path) == lines
    assert count_lines(path) == len(lines)


@pytest.mark.parametrize("suffix", [".txt", ".gz"])
def test_read_lines_awkward_file(tmp_path: Path, suffix: str) -> None:
    data = "\ufeffA\x0bB\r\n\r\nC\x1cD\u2028E\n\nF\x85G\n".encode()
    path = write(tmp_path / f"awkward{suffix}", data)
    assert read_lines(path) == ["A\x0bB", "", "C\x1cD\u2028E", "", "F\x85G"]
    assert count_lines(path) == 5
    assert [clean_line(line) for line in read_lines(path)] == ["A B", "", "C D E", "", "F G"]


def test_read_lines_trailing_newline_and_empty_files(tmp_path: Path) -> None:
    cases = {b"": [], b"\n": [""], b"a": ["a"], b"a\n": ["a"], b"a\n\n": ["a", ""], b"\xef\xbb\xbf": []}
    for index, (data, lines) in enumerate(cases.items()):
        path = write(tmp_path / f"case{index}.txt", data)
        assert read_lines(path) == lines, data
        assert count_lines(path) == len(lines), data


@pytest.mark.parametrize("suffix", [".de", ".de.gz"])
def test_invalid_utf8_names_file_and_line(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"bad{suffix}", b"ok\nstill ok\nbad \xff byte\nfine\n")
    with pytest.raises(CorpusError) as error:
        read_lines(path)
    assert str(path) in str(error.value) and "line 3" in str(error.value)
    assert read_lines(path, encoding_errors="replace") == ["ok", "still ok", "bad \ufffd byte", "fine"]


def test_split_lines_bytes() -> None:
    assert split_lines(b"a\r\nb\x0bc\n", "<stdin>") == ["a", "b\x0bc"]
    with pytest.raises(CorpusError, match="<stdin>: line 2"):
        split_lines(b"a\n\xc3(", "<stdin>")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        read_lines(tmp_path / "missing.en")
    fake_gz = tmp_path / "fake.gz"
    fake_gz.write_bytes(b"not gzip at all")
    for reader in (read_lines, count_lines):
        with pytest.raises(CorpusError, match="fake.gz"):
            reader(fake_gz)


# ---- resolve_split / read_parallel ---------------------------------------------------------------


def test_resolve_split_prefix_and_tsv(tmp_path: Path) -> None:
    write(tmp_path / "train.en", b"a\n")
    write(tmp_path / "train.de.gz", b"b\n")
    files = resolve_split(str(tmp_path / "train"), "en", "de")
    assert (files.src, files.trg, files.is_tsv) == (tmp_path / "train.en", tmp_path / "train.de.gz", False)
    write(tmp_path / "train.de", b"b\n")  # a plain file wins over its .gz
    assert resolve_split(str(tmp_path / "train"), "en", "de").trg == tmp_path / "train.de"

    tsv = write(tmp_path / "dev.tsv.gz", b"a\tb\n")
    files = resolve_split(str(tsv), "en", "de")
    assert files.is_tsv and files.src == tsv


def test_resolve_split_names_what_it_tried(tmp_path: Path) -> None:
    write(tmp_path / "train.en", b"a\n")
    with pytest.raises(CorpusError) as error:
        resolve_split(str(tmp_path / "train"), "en", "fr")
    message = str(error.value)
    assert str(tmp_path / "train.fr") in message and str(tmp_path / "train.fr.gz") in message
    with pytest.raises(CorpusError, match="missing.tsv"):
        resolve_split(str(tmp_path / "missing.tsv"), "en", "de")


def test_read_parallel_cleans_lines(tmp_path: Path) -> None:
    write(tmp_path / "train.en.gz", "\ufeffA  man\r\nwith\u2028a hat\n\n".encode())
    write(tmp_path / "train.de", "Ein\xa0Mann\nmit\x0bHut\n\t\n".encode())
    corpus = read_parallel(str(tmp_path / "train"), "en", "de")
    assert corpus.src == ["A man", "with a hat", ""]
    assert corpus.trg == ["Ein Mann", "mit Hut", ""]
    assert len(corpus) == 3 and "train.en.gz" in corpus.description


def test_mismatched_files_are_reported_before_decoding(tmp_path: Path) -> None:
    src = write(tmp_path / "train.en", b"one\ntwo\nthree\n")
    trg = write(tmp_path / "train.de.gz", b"eins\n\xff\n")  # invalid UTF-8 too: the count comes first
    with pytest.raises(CorpusError) as error:
        read_parallel(str(tmp_path / "train"), "en", "de")
    message = str(error.value)
    assert str(src) in message and str(trg) in message
    assert "3 lines" in message and "2 lines" in message


def test_read_parallel_tsv(tmp_path: Path) -> None:
    tsv = write(tmp_path / "train.tsv", "A man\tEin Mann\r\n\tleer\nx \x0b y\tz\n".encode())
    corpus = read_parallel(str(tsv), "en", "de")
    assert corpus.src == ["A man", "", "x y"]
    assert corpus.trg == ["Ein Mann", "leer", "z"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"a\tb\nno tab here\nc\td\n", r"line 2.*no tab"), (b"a\tb\nc\td\ne\tf\tg\n", r"line 3.*3 fields.*more than 2")],
)
def test_read_parallel_tsv_errors(tmp_path: Path, data: bytes, expected: str) -> None:
    tsv = write(tmp_path / "bad.tsv", data)
    with pytest.raises(CorpusError, match=expected) as error:
        read_parallel(str(tsv), "en", "de")
    assert str(tsv) in str(error.value)


def test_filter_pairs_counts_reasons() -> None:
    src_lengths = [3, 0, 5, 120, 4, 0, 7]
    trg_lengths = [4, 2, 0, 5, 101, 200, 100]
    result = filter_pairs(src_lengths, trg_lengths, max_src_tokens=100, max_trg_tokens=100)
    assert result.kept == [0, 6]
    assert (result.n_empty, result.n_too_long, result.n_skipped) == (3, 2, 5)
    assert "kept 2" in result.summary()


def test_multi30k_train(data_dir: Path) -> None:
    corpus = read_parallel(str(data_dir / "multi30k" / "train"), "en", "de")
    assert len(corpus.src) == len(corpus.trg) == 29000
    assert all(corpus.src) and all(corpus.trg)
    assert count_lines(data_dir / "multi30k" / "val.de.gz") == 1014
