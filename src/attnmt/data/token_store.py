"""The prepared token store: a corpus tokenized once, then memory-mapped (as nanoGPT's train.bin
and fairseq's indexed datasets do it), so that training holds no copy of its tokens in memory and
every process of a distributed run maps the same pages.

    DIR/
      meta.json      format, pair count, dtypes, the fingerprint of what it was built from, counts
      src.ids        the source token ids of every kept pair, one after the other
      trg.ids        the target token ids
      src.lengths    tokens per pair (without BOS/EOS), one number per pair
      trg.lengths
      links.ids      optional (guided alignment): the (source piece, target piece) links of every pair
      links.lengths  links per pair

Ids are stored in the smallest unsigned type that holds the vocabulary (uint16 up to 65,536
pieces), lengths in the smallest that holds the longest allowed sentence (uint8 up to 255 tokens):
about two bytes per token on disk. Offsets are not stored: they are the cumulative lengths,
computed when the store is opened; at 8 bytes a pair and side (160 MB for ten million pairs, in
every process of a distributed run) they are what a store costs in memory.

``TokenStoreWriter`` writes into a temporary folder beside DIR and renames it to DIR only when
everything, ``meta.json`` last, is written and flushed: a run killed while preparing leaves no store
that looks complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attnmt.errors import CorpusError

FORMAT = "attnmt-token-store-1"
META_FILE = "meta.json"
SIDES = ("src", "trg")


def smallest_unsigned(largest: int) -> np.dtype:
    """The smallest unsigned integer type that holds 0 ... ``largest``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class TokenStore:
    """A prepared corpus, memory-mapped: ``src(i)`` and ``trg(i)`` are the token ids of pair i."""

    def __init__(self, directory: Path, meta: dict[str, Any], ids: dict[str, np.ndarray],
                 lengths: dict[str, np.ndarray]) -> None:
        self.directory = directory
        self.meta = meta
        self._ids = ids
        self.src_lengths, self.trg_lengths = lengths["src"], lengths["trg"]  # (n_pairs,) memory-mapped
        # where each pair's ids start: the cumulative lengths (n_pairs + 1,), in memory (not mapped)
        self._offsets = {side: np.concatenate([[0], np.cumsum(lengths[side], dtype=np.int64)]) for side in lengths}

    @property
    def has_links(self) -> bool:
        """Whether the store holds word alignments (as links between pieces), for guided alignment."""
        return "links" in self._ids

    @classmethod
    def open(cls, directory: Path | str) -> "TokenStore":
        """Map a complete store; a missing, incomplete or damaged one is a CorpusError naming it."""
        directory = Path(directory)
        meta = read_meta(directory)
        if meta is None:
            raise CorpusError(f"{directory} holds no complete token store (no readable {META_FILE})")
        n_pairs = meta["pairs"]
        ids, lengths = {}, {}
        for side in SIDES:
            lengths[side] = _map(directory / f"{side}.lengths", np.dtype(meta["length_dtype"]), n_pairs)
            ids[side] = _map(directory / f"{side}.ids", np.dtype(meta["id_dtype"]), meta["tokens"][side])
        if "links" in meta["tokens"]:  # two numbers a link
            counts = _map(directory / "links.lengths", np.dtype(meta["link_count_dtype"]), n_pairs)
            lengths["links"] = 2 * counts.astype(np.int64)
            ids["links"] = _map(directory / "links.ids", np.dtype(meta["length_dtype"]), meta["tokens"]["links"])
        store = cls(directory, meta, ids, lengths)
        for side in lengths:
            if store._offsets[side][-1] != meta["tokens"][side]:
                raise CorpusError(f"{directory}: the lengths of {side} do not add up to its tokens: damaged store")
        return store

    def __len__(self) -> int:
        return int(self.meta["pairs"])

    def src(self, index: int) -> np.ndarray:
        return self._slice("src", index)

    def trg(self, index: int) -> np.ndarray:
        return self._slice("trg", index)

    def _slice(self, side: str, index: int) -> np.ndarray:
        offsets = self._offsets[side]
        return self._ids[side][offsets[index] : offsets[index + 1]]

    def links(self, index: int) -> np.ndarray:
        """The (source piece, target piece) links of pair ``index``, (links, 2)."""
        return self._slice("links", index).reshape(-1, 2)

    def ids(self, side: str, indices: Sequence[int]) -> list[list[int]]:
        """The token ids of pairs ``indices`` on one side, as lists (what ``collate`` pads)."""
        return [self._slice(side, int(i)).tolist() for i in indices]

    def size_on_disk(self) -> int:
        return sum(path.stat().st_size for path in self.directory.iterdir())


def read_meta(directory: Path) -> dict[str, Any] | None:
    """The metadata of the store in ``directory``; None where there is no complete store."""
    try:
        meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    expected = count * dtype.itemsize
    try:
        size = path.stat().st_size
    except OSError as error:
        raise CorpusError(f"cannot read the token store file {path}: {error}") from None
    if size != expected:
        raise CorpusError(f"{path} has {size} bytes where {expected} were written: damaged token store")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class TokenStoreWriter:
    """Builds a store chunk by chunk in a temporary folder; ``finish`` makes it complete (and
    replaces an older store in the same place), ``abort`` (or leaving the ``with`` block by an
    exception) removes what was written."""

    def __init__(self, directory: Path | str, vocab_size: int, max_length: int, with_links: bool = False) -> None:
        """with_links: each pair comes with its (source piece, target piece) links (``add(links=...)``)."""
        self.directory = Path(directory)
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.directory.with_name(f".{self.directory.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self.tmp.mkdir()
        self.id_dtype = smallest_unsigned(vocab_size - 1)
        self.length_dtype = smallest_unsigned(max_length)  # also the type of a link's piece positions
        self.link_count_dtype = smallest_unsigned(max_length * max_length)
        sides = SIDES + (("links",) if with_links else ())
        self.tokens = {side: 0 for side in sides}
        self.pairs = 0
        self._files = {(side, kind): open(self.tmp / f"{side}.{kind}", "wb") for side in sides
                       for kind in ("ids", "lengths")}

    def add(self, src_ids: Sequence[Sequence[int]], trg_ids: Sequence[Sequence[int]],
            links: Sequence[np.ndarray] | None = None) -> None:
        """Append pairs (token ids without BOS/EOS), and their links ((n, 2) arrays) if the store has them."""
        for side, rows in (("src", src_ids), ("trg", trg_ids)):
            lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter((token for row in rows for token in row), dtype=self.id_dtype, count=int(lengths.sum()))
            self._files[side, "ids"].write(flat.tobytes())
            self._files[side, "lengths"].write(lengths.astype(self.length_dtype).tobytes())
            self.tokens[side] += int(lengths.sum())
        if "links" in self.tokens:
            counts = np.array([len(pair) for pair in links], dtype=self.link_count_dtype)
            flat = np.concatenate([np.asarray(pair).reshape(-1) for pair in links]) if links else np.zeros(0)
            self._files["links", "ids"].write(flat.astype(self.length_dtype).tobytes())
            self._files["links", "lengths"].write(counts.tobytes())
            self.tokens["links"] += len(flat)
        self.pairs += len(src_ids)

    def finish(self, fingerprint: dict[str, Any], counts: dict[str, int]) -> TokenStore:
        """Flush everything, write ``meta.json`` last, and move the folder into place."""
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        meta = {"format": FORMAT, "pairs": self.pairs, "tokens": self.tokens, "id_dtype": self.id_dtype.name,
                "length_dtype": self.length_dtype.name, "link_count_dtype": self.link_count_dtype.name,
                "fingerprint": fingerprint, "counts": counts}
        with open(self.tmp / META_FILE, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if self.directory.exists():  # a stale store: out of the way first (a rename cannot replace a folder)
            stale = self.directory.with_name(f".{self.directory.name}.{secrets.token_hex(4)}.stale.tmp")
            os.replace(self.directory, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(self.tmp, self.directory)
        return TokenStore.open(self.directory)

    def abort(self) -> None:
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "TokenStoreWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.abort()


def remove_stale_stores(parent: Path) -> None:
    """Delete the temporary folders that a killed ``TokenStoreWriter`` left in ``parent``."""
    for path in Path(parent).glob(".*.tmp"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
