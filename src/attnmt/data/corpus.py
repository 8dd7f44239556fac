"""Reading parallel corpora: one file per language (plain or .gz), or one TSV file.

A line ends at ``\\n`` and nowhere else (``\\r\\n`` counts as one line end): ``str.splitlines``
would also split on ``\\x0b``, ``\\x1c``, ``\\u2028`` and others and shift every later line out of
alignment with the other language. A final line end does not start an extra, empty line.

Public API:
    read_lines(path, encoding_errors="strict") -> list[str]
    split_lines(data: bytes, source: str, encoding_errors="strict") -> list[str]
    count_lines(path) -> int
    resolve_split(spec, src_lang, trg_lang) -> SplitFiles
    read_parallel(spec, src_lang, trg_lang, encoding_errors="strict") -> ParallelCorpus
    iter_lines(path, encoding_errors="strict"), iter_pairs(files, encoding_errors) -> iterators, for any size
    check_lengths(files) -> int
    filter_pairs(src_lengths, trg_lengths, max_src_tokens, max_trg_tokens) -> FilterResult
"""

from __future__ import annotations

import gzip
import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal, Sequence, TypeVar

from attnmt.data.text import clean_line
from attnmt.errors import CorpusError

EncodingErrors = Literal["strict", "replace"]
T = TypeVar("T")

_CHUNK_BYTES = 1 << 20
_BOM = "\ufeff"


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's text lives: one file per language, or one TSV file (then src == trg)."""

    src: Path
    trg: Path
    is_tsv: bool = False

    def describe(self) -> str:
        return f"{self.src} (TSV)" if self.is_tsv else f"{self.src} + {self.trg}"


@dataclass
class ParallelCorpus:
    """Sentence-aligned text, cleaned with ``clean_line``: ``src[i]`` translates to ``trg[i]``."""

    src: list[str]
    trg: list[str]
    description: str  # where it came from, for logs

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class FilterResult:
    """Which pairs ``filter_pairs`` kept, and how many it skipped for each reason."""

    kept: list[int]  # positions of the kept pairs, in order
    n_empty: int  # source or target side empty
    n_too_long: int  # source or target side over its maximum length

    @property
    def n_skipped(self) -> int:
        return self.n_empty + self.n_too_long

    def summary(self) -> str:
        return filter_summary(len(self.kept), self.n_empty, self.n_too_long)


def filter_summary(kept: int, empty: int, too_long: int) -> str:
    """What ``filter_pairs`` did, for the log: "kept 29000 pairs, skipped 3 empty and 1 too long"."""
    return f"kept {kept} pairs, skipped {empty} empty and {too_long} too long"


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: Path | str, encoding_errors: EncodingErrors = "strict") -> list[str]:
    """All lines of a UTF-8 text file (``.gz`` by suffix), without line ends or a leading BOM.

    With ``encoding_errors="strict"`` invalid UTF-8 raises CorpusError naming the file and the
    1-based line number; with ``"replace"`` each bad byte becomes U+FFFD. For files of any size,
    ``iter_lines`` reads the same lines one at a time.
    """
    return list(iter_lines(path, encoding_errors))


def iter_lines(path: Path | str, encoding_errors: EncodingErrors = "strict") -> Iterator[str]:
    """The lines of a UTF-8 text file (``.gz`` by suffix) one at a time, as ``read_lines`` returns
    them: memory does not grow with the file."""
    path = Path(path)
    try:
        with _open_binary(path) as handle:
            yield from iter_text_lines(handle, str(path), encoding_errors)
    except FileNotFoundError as err:
        raise CorpusError(f"{path}: file not found") from err
    except (OSError, EOFError, zlib.error) as err:  # includes gzip.BadGzipFile and truncated .gz
        raise CorpusError(f"{path}: cannot read: {err}") from err


def iter_text_lines(handle: BinaryIO, source: str, encoding_errors: EncodingErrors = "strict") -> Iterator[str]:
    """The lines of a binary stream of UTF-8 (a file, stdin), split at ``\\n`` only (a binary stream
    splits nowhere else), without the line end, a ``\\r`` before it or a BOM at the very start;
    ``source`` names the stream in errors."""
    for number, raw in enumerate(handle, start=1):
        ended = raw.endswith(b"\n")
        if ended:
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8", errors=encoding_errors)
        except UnicodeDecodeError as err:
            raise CorpusError(
                f"{source}: line {number}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at byte column "
                f"{err.start + 1}); fix the file or read it with encoding_errors='replace'"
            ) from None
        if number == 1 and line.startswith(_BOM):
            line = line[1:]
            if not line and not ended and raw == _BOM.encode():  # a file of a lone BOM has no line
                return
        yield line


def split_lines(data: bytes, source: str, encoding_errors: EncodingErrors = "strict") -> list[str]:
    """The lines of UTF-8 bytes, as ``read_lines`` reads a file; ``source`` names them in errors
    (e.g. ``"<stdin>"``)."""
    try:
        text = data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as err:
        line_number = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise CorpusError(
            f"{source}: line {line_number}: invalid UTF-8 (byte 0x{data[err.start]:02x} at byte column {column}); "
            "fix the file or read it with encoding_errors='replace'"
        ) from None
    if text.startswith(_BOM):
        text = text[1:]
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":  # the final line end does not start a new line
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def count_lines(path: Path | str) -> int:
    """The number of lines ``read_lines`` would return, counted on bytes without decoding."""
    path = Path(path)
    count, last_byte, head = 0, b"\n", b""
    try:
        with _open_binary(path) as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                head = head or chunk[:4]
                count += chunk.count(b"\n")
                last_byte = chunk[-1:]
    except FileNotFoundError as err:
        raise CorpusError(f"{path}: file not found") from err
    except (OSError, EOFError, zlib.error) as err:
        raise CorpusError(f"{path}: cannot read: {err}") from err
    if last_byte == b"\n" or head == _BOM.encode():  # a lone BOM is no line
        return count
    return count + 1


def resolve_split(spec: str, src_lang: str, trg_lang: str) -> SplitFiles:
    """Find a split's files. ``spec`` is a TSV file (``*.tsv`` or ``*.tsv.gz``) or a prefix:
    ``{prefix}.{lang}``, else ``{prefix}.{lang}.gz``, for each language."""
    if not spec:
        raise CorpusError("empty corpus spec: give a TSV file or a file prefix such as data/train")
    if spec.endswith((".tsv", ".tsv.gz")):
        path = Path(spec)
        if not path.is_file():
            raise CorpusError(f"TSV file not found: {path}")
        return SplitFiles(path, path, is_tsv=True)
    return SplitFiles(_language_file(spec, src_lang), _language_file(spec, trg_lang))


def _language_file(prefix: str, lang: str) -> Path:
    candidates = [Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(path) for path in candidates)
    raise CorpusError(f"no '{lang}' file for corpus '{prefix}': tried {tried}")


def read_parallel(
    spec: str, src_lang: str, trg_lang: str, encoding_errors: EncodingErrors = "strict"
) -> ParallelCorpus:
    """Read and clean a parallel corpus (see ``resolve_split`` for ``spec``) into memory; for a
    corpus of any size, ``iter_pairs`` reads the same pairs one at a time.

    Two files must have the same number of lines; this is checked before anything is decoded.
    """
    files = resolve_split(spec, src_lang, trg_lang)
    pairs = list(iter_pairs(files, encoding_errors, check_lengths(files)))
    return ParallelCorpus([s for s, _ in pairs], [t for _, t in pairs], files.describe())


def check_lengths(files: SplitFiles) -> int:
    """The number of lines of a split, its two files checked to have the same (counted on bytes,
    without decoding); CorpusError naming both files and counts if they differ."""
    src_count = count_lines(files.src)
    if files.is_tsv:
        return src_count
    trg_count = count_lines(files.trg)
    if src_count != trg_count:
        raise CorpusError(
            f"parallel files differ in length: {files.src} has {src_count} lines, {files.trg} has {trg_count} lines"
        )
    return src_count


def iter_pairs(files: SplitFiles, encoding_errors: EncodingErrors = "strict",
               expected_lines: int | None = None) -> Iterator[tuple[str, str]]:
    """The cleaned (source, target) pairs of a split, one at a time: memory does not grow with the
    corpus. ``expected_lines``: what ``check_lengths`` counted; a file that changes while it is
    read is then a CorpusError too (never a shifted line)."""
    if files.is_tsv:
        pairs = (_tsv_fields(line, files.src, number) for number, line in
                 enumerate(iter_lines(files.src, encoding_errors), start=1))
    else:
        pairs = zip(iter_lines(files.src, encoding_errors), iter_lines(files.trg, encoding_errors), strict=True)
    count = 0
    try:
        for src, trg in pairs:
            count += 1
            yield clean_line(src), clean_line(trg)
    except ValueError as err:  # zip(strict=True): one file ended before the other
        if isinstance(err, CorpusError):
            raise
        raise CorpusError(f"{files.describe()}: the files changed while being read ({err})") from None
    if expected_lines is not None and count != expected_lines:
        raise CorpusError(f"{files.describe()}: {count} lines read where {expected_lines} were counted: "
                          "the files changed while being read")


def _tsv_fields(line: str, path: Path, line_number: int) -> tuple[str, str]:
    fields = line.split("\t")
    if len(fields) != 2:
        problem = "no tab" if len(fields) == 1 else f"{len(fields)} fields (more than 2; a tab inside a sentence?)"
        raise CorpusError(f"{path}: line {line_number}: expected source<TAB>target, found {problem}")
    return fields[0], fields[1]


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), read as they are needed."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def filter_pairs(
    src_lengths: Sequence[int], trg_lengths: Sequence[int], max_src_tokens: int, max_trg_tokens: int
) -> FilterResult:
    """Keep the pairs whose sides are both non-empty and within their maximum length (in tokens,
    without BOS/EOS). A pair that is both empty on one side and too long on the other counts as empty."""
    if len(src_lengths) != len(trg_lengths):
        raise ValueError(f"{len(src_lengths)} source lengths but {len(trg_lengths)} target lengths")
    kept: list[int] = []
    n_empty = n_too_long = 0
    for index, (src_length, trg_length) in enumerate(zip(src_lengths, trg_lengths)):
        if src_length == 0 or trg_length == 0:
            n_empty += 1
        elif src_length > max_src_tokens or trg_length > max_trg_tokens:
            n_too_long += 1
        else:
            kept.append(index)
    return FilterResult(kept, n_empty, n_too_long)
