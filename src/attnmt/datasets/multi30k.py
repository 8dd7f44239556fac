"""Multi30k, WMT multimodal translation task 1 (text only): fetch, verify, write plain text files.

``prepare_multi30k("en-de", out_dir)`` downloads the raw files of the dataset's public GitHub
repository (``{base_url}/{split}.{lang}.gz``), or copies them from a local folder with
``source_dir=`` (``{split}.{lang}`` or ``{split}.{lang}.gz``), verifies every file, and only then
writes ``out_dir/{split}.{lang}``, decompressed, ready for ``data.train: out_dir/train``. A reverse
pair (de-en, fr-en) writes the same files; the pair only picks the two languages.

What exists upstream (multi30k/dataset, data/task1/raw/; cs exists too but is not offered here):
    train, val, test_2016_flickr         en de fr   required: the standard benchmark
    test_2017_flickr, test_2017_mscoco   en de fr   optional
    test_2018_flickr                     en de fr   optional: its de/fr sides were withheld during
                                                    WMT18 and added later; older copies hold only .en
An optional split whose file is missing (HTTP 404, or absent from ``source_dir``) is skipped and
reported; a missing required file is an error.

What is verified, for every file: gzip integrity (when compressed), strict UTF-8, the published
line count (``EXPECTED_LINES``), and equal line counts on the two sides of a pair. For train, val
and test_2016_flickr in en/de/fr also the sha256 of the decompressed text (``KNOWN_SHA256``);
for the other test sets no checksum is known (see the comment there), so line counts only.

Public API:
    PAIRS, SPLITS, REQUIRED_SPLITS, DEFAULT_BASE_URL, EXPECTED_LINES, KNOWN_SHA256
    Multi30kError (a CorpusError), DownloadError (an OSError)
    parse_pair(pair) -> (src_lang, trg_lang)
    verify_file(name, data, expected_lines, expected_sha256) -> VerifiedText
    prepare_multi30k(pair, out_dir, source_dir=None, base_url=..., timeout=..., log=None) -> Multi30kResult
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from attnmt.data.corpus import split_lines
from attnmt.errors import DownloadError, Multi30kError
from attnmt.store import atomic_write_bytes

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
PAIRS: dict[str, tuple[str, str]] = {"en-de": ("en", "de"), "en-fr": ("en", "fr"),
                                     "de-en": ("de", "en"), "fr-en": ("fr", "en")}
REQUIRED_SPLITS = ("train", "val", "test_2016_flickr")
SPLITS = REQUIRED_SPLITS + ("test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")

# Sentences per split, the same in every language. train ... test_2017_mscoco: the "Statistics"
# section of the dataset's README. test_2018_flickr (not in that README): one description per image
# of data/task1/image_splits/test_2018_flickr.txt, which lists 1071 images.
EXPECTED_LINES: dict[str, int] = {"train": 29000, "val": 1014, "test_2016_flickr": 1000,
                                  "test_2017_flickr": 1000, "test_2017_mscoco": 461, "test_2018_flickr": 1071}

# sha256 of the *decompressed* text, so that a plain copy and a re-compressed one verify alike.
# Known: computed from the public raw files of train, val and test_2016_flickr in en/de/fr (the
# copies in the project's shared data folder). Unknown, hence absent: test_2017_flickr,
# test_2017_mscoco and test_2018_flickr, which we could not obtain to hash; they are checked by
# line counts only. Add their checksums here once computed from the public files.
KNOWN_SHA256: dict[tuple[str, str], str] = {
    ("train", "en"): "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    ("train", "de"): "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    ("train", "fr"): "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    ("val", "en"): "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    ("val", "de"): "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    ("val", "fr"): "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
    ("test_2016_flickr", "en"): "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    ("test_2016_flickr", "de"): "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    ("test_2016_flickr", "fr"): "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
}

DEFAULT_TIMEOUT = 60.0  # seconds without progress before a download gives up
_MAX_DOWNLOAD_BYTES = 64 << 20  # the largest file is 0.7 MB; a wrong URL must not fill the disk
_GZIP_MAGIC = b"\x1f\x8b"

Log = Callable[[str], None]


@dataclass(frozen=True)
class VerifiedText:
    """One file's decompressed text after verification."""

    text: bytes
    lines: int
    sha256: str
    checksum_verified: bool  # False: no known checksum for this file, line count only


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    lines: int
    sha256: str
    checksum_verified: bool


@dataclass
class Multi30kResult:
    out_dir: Path
    src_lang: str
    trg_lang: str
    written: list[WrittenFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # split -> why

    def config_hint(self) -> str:
        """The ``data:`` section of a config that trains on these files."""
        out = self.out_dir
        return (f"data:\n  train: {out / 'train'}\n  valid: {out / 'val'}\n  test: {out / 'test_2016_flickr'}\n"
                f"  src_lang: {self.src_lang}\n  trg_lang: {self.trg_lang}")


def parse_pair(pair: str) -> tuple[str, str]:
    """``"en-de"`` -> ``("en", "de")``; only the pairs in ``PAIRS``."""
    if pair not in PAIRS:
        raise Multi30kError(f"unknown pair '{pair}': choose one of {', '.join(PAIRS)}")
    return PAIRS[pair]


def verify_file(name: str, data: bytes, expected_lines: int, expected_sha256: str | None) -> VerifiedText:
    """Decompress (if gzip) and check ``data``: UTF-8, line count, then sha256 when one is known.
    Raises CorpusError (Multi30kError for everything but invalid UTF-8) naming ``name``, a path or URL."""
    text = _decompress(name, data)
    lines = len(split_lines(text, name))  # counts lines as every reader in attnmt does; checks UTF-8
    if lines != expected_lines:
        raise Multi30kError(f"{name}: {lines} lines, expected {expected_lines}: "
                            "the file is incomplete or not the Multi30k task 1 release")
    digest = hashlib.sha256(text).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise Multi30kError(f"{name}: checksum mismatch: sha256 of its text is {digest}, expected {expected_sha256}: "
                            "the file is corrupted or modified; fetch it again")
    return VerifiedText(text, lines, digest, checksum_verified=expected_sha256 is not None)


def prepare_multi30k(pair: str, out_dir: Path | str, source_dir: Path | str | None = None,
                     base_url: str = DEFAULT_BASE_URL, timeout: float = DEFAULT_TIMEOUT,
                     log: Log | None = None) -> Multi30kResult:
    """Fetch (download, or copy from ``source_dir``), verify, and write ``out_dir/{split}.{lang}``.

    Nothing is written until every file has passed verification, and each file is written to a
    temporary name and renamed, so ``out_dir`` never holds a partial or unverified file. When
    downloading, files already in ``out_dir`` that verify are kept instead of downloaded again.
    """
    log = log or (lambda message: None)
    langs = parse_pair(pair)
    out_dir = Path(out_dir)
    if source_dir is not None and not Path(source_dir).is_dir():
        raise Multi30kError(f"--from folder not found: {source_dir}")
    hint = _offline_hint(pair, out_dir, base_url)
    result = Multi30kResult(out_dir, *langs)
    verified: dict[tuple[str, str], VerifiedText] = {}
    with tempfile.TemporaryDirectory(prefix="attnmt-multi30k-") as work_dir:

        def fetch(split: str, lang: str) -> tuple[str, bytes] | None:
            if source_dir is not None:
                return _read_local(Path(source_dir), split, lang)
            return _reuse_existing(out_dir, split, lang) or _download(
                _url(base_url, split, lang), Path(work_dir), timeout, hint)

        for split in SPLITS:
            texts: dict[str, VerifiedText] = {}
            for lang in langs:
                if (found := fetch(split, lang)) is None:
                    _report_missing(split, lang, source_dir, base_url, hint, result, log)
                    break
                texts[lang] = verify_file(*found, EXPECTED_LINES[split], KNOWN_SHA256.get((split, lang)))
            else:
                src, trg = (texts[lang] for lang in langs)
                if src.lines != trg.lines:  # implied by the expected counts; kept as the pair's own check
                    raise Multi30kError(f"{split}: {langs[0]} has {src.lines} lines, {langs[1]} has {trg.lines}")
                verified.update({(split, lang): texts[lang] for lang in langs})
    out_dir.mkdir(parents=True, exist_ok=True)
    for (split, lang), checked in verified.items():
        path = out_dir / f"{split}.{lang}"
        atomic_write_bytes(path, checked.text)
        result.written.append(WrittenFile(path, checked.lines, checked.sha256, checked.checksum_verified))
        how = "sha256 verified" if checked.checksum_verified else "line count verified (no known checksum)"
        log(f"{path}: {checked.lines} lines, {how}")
    return result


def _report_missing(split: str, lang: str, source_dir: Path | str | None, base_url: str, hint: str,
                    result: Multi30kResult, log: Log) -> None:
    """A file that does not exist: an error for a required split, else the split is skipped."""
    if source_dir is not None:
        reason = f"{split}.{lang} not found in {source_dir}"
    else:
        reason = f"{split}.{lang} not found at {_url(base_url, split, lang)} (HTTP 404)"
    if split in REQUIRED_SPLITS:
        message = f"{reason}; {', '.join(REQUIRED_SPLITS)} are required"
        raise Multi30kError(message) if source_dir is not None else DownloadError(f"{message}; {hint}")
    result.skipped[split] = reason
    log(f"skipped {split}: {reason}")


def _url(base_url: str, split: str, lang: str) -> str:
    return f"{base_url.rstrip('/')}/{split}.{lang}.gz"


def _decompress(name: str, data: bytes) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        if name.endswith(".gz"):
            raise Multi30kError(f"{name}: not a gzip file")
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile, truncated stream, bad CRC
        raise Multi30kError(f"{name}: damaged gzip data ({err}): the file is incomplete or corrupted") from err


def _read_local(source_dir: Path, split: str, lang: str) -> tuple[str, bytes] | None:
    """``{split}.{lang}``, else ``{split}.{lang}.gz``, from ``source_dir``; None if neither exists."""
    for path in (source_dir / f"{split}.{lang}", source_dir / f"{split}.{lang}.gz"):
        if path.is_file():
            return str(path), path.read_bytes()
    return None


def _reuse_existing(out_dir: Path, split: str, lang: str) -> tuple[str, bytes] | None:
    """A file from an earlier run, if it verifies; else None (it is then downloaded again)."""
    path = out_dir / f"{split}.{lang}"
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        verify_file(str(path), data, EXPECTED_LINES[split], KNOWN_SHA256.get((split, lang)))
    except Multi30kError:
        return None
    return str(path), data


def _offline_hint(pair: str, out_dir: Path, base_url: str) -> str:
    return (f"download the files yourself ({base_url.rstrip('/')}/{{split}}.{{lang}}.gz for splits "
            f"{', '.join(SPLITS)}) into a folder and run: "
            f"attnmt data multi30k --pair {pair} --from FOLDER --out {out_dir}")


def _download(url: str, work_dir: Path, timeout: float, hint: str) -> tuple[str, bytes] | None:
    """Download ``url`` through a temporary file in ``work_dir``; None on HTTP 404. Any other
    failure raises DownloadError ending with ``hint`` (how to pass local files instead)."""
    host = urllib.parse.urlsplit(url).netloc or url
    part = work_dir / (Path(urllib.parse.urlsplit(url).path).name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as handle:
            size = 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > _MAX_DOWNLOAD_BYTES:
                    limit = _MAX_DOWNLOAD_BYTES >> 20
                    raise DownloadError(f"{url}: more than {limit} MiB, not a Multi30k file; {hint}")
                handle.write(chunk)
            promised = response.headers.get("Content-Length")
            if promised is not None and promised.isdigit() and size != int(promised):
                # read(n) returns b"" when the connection drops: only the promised length tells
                raise DownloadError(f"download of {url} was cut off after {size} of {promised} bytes; {hint}")
        return url, part.read_bytes()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; {hint}") from err
    except urllib.error.URLError as err:  # DNS failure, connection refused, no route, TLS
        raise DownloadError(f"could not reach {host} ({err.reason}); {hint}") from err
    except (http.client.HTTPException, TimeoutError, ConnectionError) as err:  # cut off or stalled mid-transfer
        raise DownloadError(f"download of {url} failed ({type(err).__name__}: {err}); {hint}") from err
    finally:
        part.unlink(missing_ok=True)
