"""attnmt data multi30k: fetch (local folder or HTTP), verify, write plain files.

Downloads are tested against an HTTP server on 127.0.0.1 only. Most tests use a small fake
release (the module's expected line counts and checksums patched to match it); the tests marked
by the ``data_dir`` fixture use the real files and the real checksums, and skip without them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from attnmt.cli import main
from attnmt.data.corpus import CorpusError, read_parallel
from attnmt.datasets import multi30k
from attnmt.datasets.multi30k import DownloadError, Multi30kError, parse_pair, prepare_multi30k, verify_file

FAKE_LINES = {"train": 6, "val": 3, "test_2016_flickr": 2, "test_2017_flickr": 2, "test_2017_mscoco": 1,
              "test_2018_flickr": 2}


def _fake_text(split: str, lang: str) -> bytes:
    return "".join(f"{lang} {split} sentence {i}, grüße\n" for i in range(FAKE_LINES[split])).encode()


@pytest.fixture
def fake_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder shaped like data/task1/raw: every split gzipped in en/de/fr, except that
    test_2018_flickr has only its English side. Checksums known for the required splits only."""
    folder = tmp_path / "raw"
    folder.mkdir()
    known = {}
    for split in multi30k.SPLITS:
        for lang in ("en", "de", "fr"):
            if split == "test_2018_flickr" and lang != "en":
                continue
            text = _fake_text(split, lang)
            (folder / f"{split}.{lang}.gz").write_bytes(gzip.compress(text))
            if split in multi30k.REQUIRED_SPLITS:
                known[(split, lang)] = hashlib.sha256(text).hexdigest()
    monkeypatch.setattr(multi30k, "EXPECTED_LINES", FAKE_LINES)
    monkeypatch.setattr(multi30k, "KNOWN_SHA256", known)
    return folder


class _Handler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.requested.append(self.path)
        super().do_GET()


class _CutOffHandler(_Handler):
    """Promises 100000 bytes, sends 10, hangs up: a connection dropped mid-download."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"\0" * 8)
        self.close_connection = True


def _serve(folder: Path, handler: type[_Handler] = _Handler):
    requested: list[str] = []
    bound = type("Handler", (handler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *args: bound(*args, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/raw", requested


@pytest.fixture
def http_root(tmp_path: Path):
    """Serves tmp_path/www over HTTP on 127.0.0.1; files go under www/raw/."""
    root = tmp_path / "www"
    (root / "raw").mkdir(parents=True)
    server, base_url, requested = _serve(root)
    yield root / "raw", base_url, requested
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# --- pairs and verification of one file ---

def test_pairs_select_languages_in_order():
    assert parse_pair("en-de") == ("en", "de")
    assert parse_pair("fr-en") == ("fr", "en")
    with pytest.raises(Multi30kError, match="unknown pair 'en-cs'.*en-de, en-fr, de-en, fr-en"):
        parse_pair("en-cs")


def test_verify_file_accepts_gzip_and_plain_alike():
    text = "eins\nzwei\n".encode()
    digest = hashlib.sha256(text).hexdigest()
    for data in (text, gzip.compress(text)):
        checked = verify_file("x.de", data, 2, digest)
        assert (checked.text, checked.lines, checked.checksum_verified) == (text, 2, True)
    assert verify_file("x.de", text, 2, None).checksum_verified is False


def test_verify_file_names_file_and_counts_when_truncated():
    with pytest.raises(Multi30kError, match=r"val\.de: 1 lines, expected 2"):
        verify_file("val.de", b"eins\n", 2, None)


def test_verify_file_checksum_mismatch():
    text = b"eins\nzwei\n"
    with pytest.raises(Multi30kError, match=r"val\.de: checksum mismatch.*corrupted"):
        verify_file("val.de", b"eins\nzwo!\n", 2, hashlib.sha256(text).hexdigest())


def test_verify_file_damaged_gzip_and_bad_utf8():
    with pytest.raises(Multi30kError, match=r"val\.de\.gz: damaged gzip"):
        verify_file("val.de.gz", gzip.compress(b"eins\nzwei\n")[:-6], 2, None)
    with pytest.raises(Multi30kError, match=r"val\.de\.gz: not a gzip file"):
        verify_file("val.de.gz", b"eins\nzwei\n", 2, None)
    with pytest.raises(CorpusError, match=r"val\.de: line 2: invalid UTF-8"):
        verify_file("val.de", b"eins\nzw\xffei\n", 2, None)


# --- --from a local folder (fake release) ---

def test_from_folder_writes_verified_plain_files(fake_release, tmp_path):
    (fake_release / "val.de.gz").unlink()  # plain files are accepted too
    (fake_release / "val.de").write_bytes(_fake_text("val", "de"))
    out = tmp_path / "out"
    result = prepare_multi30k("en-de", out, source_dir=fake_release)
    expected = [f"{split}.{lang}" for split in multi30k.SPLITS if split != "test_2018_flickr" for lang in ("de", "en")]
    assert _files(out) == sorted(expected)
    for name in expected:
        split, lang = name.rsplit(".", 1)
        assert (out / name).read_bytes() == _fake_text(split, lang)
    verified = {file.path.name: file.checksum_verified for file in result.written}
    assert verified["train.de"] and verified["test_2016_flickr.en"] and not verified["test_2017_mscoco.de"]
    assert list(result.skipped) == ["test_2018_flickr"]  # its German side does not exist
    assert "test_2018_flickr.de not found" in result.skipped["test_2018_flickr"]
    corpus = read_parallel(str(out / "train"), "en", "de")  # ready for data.train: out/train
    assert len(corpus) == FAKE_LINES["train"]


def test_reverse_pair_writes_the_same_files(fake_release, tmp_path):
    forward = prepare_multi30k("en-fr", tmp_path / "forward", source_dir=fake_release)
    reverse = prepare_multi30k("fr-en", tmp_path / "reverse", source_dir=fake_release)
    assert _files(tmp_path / "forward") == _files(tmp_path / "reverse")
    for file in forward.written:
        assert (tmp_path / "reverse" / file.path.name).read_bytes() == file.path.read_bytes()
    assert (reverse.src_lang, reverse.trg_lang) == ("fr", "en")
    assert "src_lang: fr\n  trg_lang: en" in reverse.config_hint()


def test_from_folder_failures_write_nothing(fake_release, tmp_path):
    out = tmp_path / "out"
    (fake_release / "val.de.gz").write_bytes(gzip.compress(b"only one line\n"))
    with pytest.raises(Multi30kError, match=r"val\.de\.gz: 1 lines, expected 3"):
        prepare_multi30k("en-de", out, source_dir=fake_release)
    assert not out.exists()  # train verified fine, but nothing is written before everything has

    (fake_release / "val.de.gz").write_bytes(gzip.compress(_fake_text("val", "de").replace(b"1", b"7")))
    with pytest.raises(Multi30kError, match=r"val\.de\.gz: checksum mismatch"):
        prepare_multi30k("en-de", out, source_dir=fake_release)

    (fake_release / "val.de.gz").unlink()
    with pytest.raises(Multi30kError, match=r"val\.de not found in .*required"):
        prepare_multi30k("en-de", out, source_dir=fake_release)
    assert not out.exists()
    with pytest.raises(Multi30kError, match="--from folder not found"):
        prepare_multi30k("en-de", out, source_dir=tmp_path / "nowhere")


# --- downloads from a loopback HTTP server ---

def test_download_success_and_reuse(fake_release, http_root, tmp_path):
    served, base_url, requested = http_root
    shutil.copytree(fake_release, served, dirs_exist_ok=True)
    out = tmp_path / "out"
    result = prepare_multi30k("de-en", out, base_url=base_url)
    assert len(result.written) == 10 and list(result.skipped) == ["test_2018_flickr"]
    assert "HTTP 404" in result.skipped["test_2018_flickr"]
    assert (out / "train.de").read_bytes() == _fake_text("train", "de")
    assert not any(name.endswith((".part", ".tmp")) for name in _files(out))
    # A second run keeps the files that verify and asks only for what is missing.
    requested.clear()
    prepare_multi30k("de-en", out, base_url=base_url)
    assert requested == ["/raw/test_2018_flickr.de.gz"]


def test_download_404_for_required_file_says_how_to_pass_local_files(http_root, tmp_path):
    _, base_url, _ = http_root  # serves nothing
    with pytest.raises(DownloadError, match=r"train\.en not found at .*HTTP 404.*--pair en-de --from FOLDER"):
        prepare_multi30k("en-de", tmp_path / "out", base_url=base_url)
    assert not (tmp_path / "out").exists()


def test_offline_error_says_how_to_pass_local_files(tmp_path):
    port = _closed_port()
    with pytest.raises(DownloadError) as error:
        prepare_multi30k("en-fr", tmp_path / "out", base_url=f"http://127.0.0.1:{port}/raw", timeout=5)
    message = str(error.value)
    assert f"could not reach 127.0.0.1:{port}" in message
    assert "download the files yourself" in message and "attnmt data multi30k --pair en-fr --from FOLDER" in message
    assert not (tmp_path / "out").exists()


def test_interrupted_download_leaves_no_file(tmp_path):
    server, base_url, _ = _serve(tmp_path, _CutOffHandler)
    try:
        with pytest.raises(DownloadError, match=r"download of .*train\.en\.gz was cut off after 10 of 100000 bytes"):
            prepare_multi30k("en-de", tmp_path / "out", base_url=base_url, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "out").exists()


# --- the command ---

def test_cli_from_folder_and_offline_error(fake_release, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "multi30k", "--pair", "de-en", "--out", str(out), "--from", str(fake_release)]) == 0
    captured = capsys.readouterr()
    assert f"train: {out / 'train'}" in captured.out and "src_lang: de" in captured.out
    assert "sha256 verified" in captured.err and "skipped test_2018_flickr" in captured.err

    url = f"http://127.0.0.1:{_closed_port()}/raw"
    assert main(["data", "multi30k", "--pair", "en-de", "--out", str(tmp_path / "o2"), "--base-url", url]) == 1
    assert "attnmt data: error: could not reach 127.0.0.1" in capsys.readouterr().err


# --- the real files (ATTNMT_DATA) with the real checksums ---

@pytest.mark.parametrize("pair", ["en-de", "fr-en"])
def test_real_files_from_folder(data_dir, tmp_path, pair):
    source = data_dir / "multi30k"
    if not (source / "train.fr.gz").is_file() and "fr" in pair:
        pytest.skip(f"{source} has no French files")
    out = tmp_path / "out"
    result = prepare_multi30k(pair, out, source_dir=source)
    assert [(f.path.name, f.lines, f.checksum_verified) for f in result.written if f.path.name.startswith("val")] \
        == [(f"val.{lang}", 1014, True) for lang in parse_pair(pair)]
    assert {f.path.name: f.lines for f in result.written}[f"train.{parse_pair(pair)[1]}"] == 29000
    assert all(f.checksum_verified for f in result.written)  # the required splits' checksums are known
    original = gzip.decompress((source / "test_2016_flickr.en.gz").read_bytes())
    assert (out / "test_2016_flickr.en").read_bytes() == original


def test_real_files_truncated_and_corrupted_copies(data_dir, tmp_path):
    source, copy = data_dir / "multi30k", tmp_path / "copy"
    copy.mkdir()
    shutil.copy(source / "train.en.gz", copy)
    german = gzip.decompress((source / "train.de.gz").read_bytes())
    (copy / "train.de").write_bytes(b"".join(german.splitlines(keepends=True)[:28990]))
    with pytest.raises(Multi30kError, match=r"train\.de: 28990 lines, expected 29000"):
        prepare_multi30k("en-de", tmp_path / "out", source_dir=copy)
    (copy / "train.de").write_bytes(german.replace(b"Zwei", b"Drei", 1))
    with pytest.raises(Multi30kError, match=r"train\.de: checksum mismatch"):
        prepare_multi30k("en-de", tmp_path / "out", source_dir=copy)
    assert not (tmp_path / "out").exists()


def test_real_files_download_over_loopback(data_dir, http_root, tmp_path):
    served, base_url, requested = http_root
    for lang in ("en", "de"):
        for split in multi30k.REQUIRED_SPLITS:
            shutil.copy(data_dir / "multi30k" / f"{split}.{lang}.gz", served)
    result = prepare_multi30k("en-de", tmp_path / "out", base_url=base_url)
    assert len(result.written) == 6 and all(f.checksum_verified for f in result.written)
    assert set(result.skipped) == {"test_2017_flickr", "test_2017_mscoco", "test_2018_flickr"}
