"""The prepared token store: what it holds is exactly the in-memory encoding of the corpus, it is
rebuilt when what it was made from changes, and a prepare that was killed is never used."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

import attnmt.training.prepare as preparation
from attnmt.config import Config
from attnmt.data.corpus import filter_pairs, read_parallel
from attnmt.data.token_store import TokenStore, TokenStoreWriter, read_meta
from attnmt.errors import CorpusError
from attnmt.store import DATA_DIR
from attnmt.training.prepare import TRAIN_STORE, prepare_data
from toy import toy_config, toy_pairs, write_toy_corpus


def quiet(message: str) -> None:
    pass


def awkward_pairs() -> list[tuple[str, str]]:
    """Toy pairs with the lines that cleaning and filtering are for: empty sides, over-long ones,
    control characters, non-breaking spaces."""
    pairs = toy_pairs(120, seed=3)
    pairs[5] = ("", "eins")
    pairs[17] = ("one two", "  ")
    pairs[30] = (" ".join(["one"] * 40), "eins")  # over max_src_tokens below
    pairs[44] = ("three\x00four\xa0five", "drei\tvier fünf")
    return pairs


def write_split(directory: Path, name: str, pairs: list[tuple[str, str]], kind: str) -> str:
    """One split as two plain files, two .gz files or one TSV file; returns the spec for data.*."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "tsv":
        path = directory / f"{name}.tsv"
        path.write_text("".join(f"{s.replace(chr(9), ' ')}\t{t.replace(chr(9), ' ')}\n" for s, t in pairs),
                        encoding="utf-8")
        return str(path)
    for lang, column in (("en", 0), ("de", 1)):
        text = "".join(pair[column] + "\n" for pair in pairs).encode("utf-8")
        if kind == "gz":
            with gzip.open(directory / f"{name}.{lang}.gz", "wb") as handle:
                handle.write(text)
        else:
            (directory / f"{name}.{lang}").write_bytes(text)
    return str(directory / name)


def config_for(train: str, valid: str) -> Config:
    config = toy_config(train, valid)
    config.data.max_src_tokens = 20
    return config


@pytest.mark.parametrize("kind", ["plain", "gz", "tsv"])
def test_the_store_holds_exactly_the_in_memory_encoding_and_the_counts(tmp_path, kind):
    train = write_split(tmp_path / "data", "train", awkward_pairs(), kind)
    valid = write_split(tmp_path / "data", "valid", toy_pairs(10, seed=9), kind)
    config = config_for(train, valid)
    messages: list[str] = []
    data = prepare_data(config, tmp_path / "model", log=messages.append)

    corpus = read_parallel(train, "en", "de")  # the same files, read and cleaned in memory
    src_ids = data.src_tokenizer.encode_batch(corpus.src)
    trg_ids = data.trg_tokenizer.encode_batch(corpus.trg)
    usable = filter_pairs([len(s) for s in src_ids], [len(t) for t in trg_ids], 20, config.data.max_trg_tokens)
    assert data.n_train_pairs == len(usable.kept) == 120 - 3
    for position, index in enumerate(usable.kept):
        assert data.train.src(position).tolist() == src_ids[index]
        assert data.train.trg(position).tolist() == trg_ids[index]
    assert data.train_src_lengths.tolist() == [len(src_ids[i]) for i in usable.kept]
    assert data.train_trg_lengths.tolist() == [len(trg_ids[i]) for i in usable.kept]
    assert data.train.meta["counts"] == {"read": 120, "kept": 117, "empty": 2, "too_long": 1}
    assert any("kept 117 pairs, skipped 2 empty and 1 too long" in m for m in messages)
    assert data.train.src(44 - 3).tolist() == data.src_tokenizer.encode("three four five")  # cleaned, 3 skipped before


def test_ids_and_lengths_take_the_smallest_types_about_two_bytes_a_token(tmp_path):
    train, valid = write_toy_corpus(tmp_path / "data", n_train=200)
    data = prepare_data(toy_config(train, valid), tmp_path / "model", log=quiet)
    store = data.train
    assert store.meta["id_dtype"] == "uint8" and store.meta["length_dtype"] == "uint8"  # 40 pieces, <= 100 tokens
    tokens = sum(store.meta["tokens"].values())
    assert (store.directory / "src.ids").stat().st_size + (store.directory / "trg.ids").stat().st_size == tokens
    with TokenStoreWriter(tmp_path / "wide", vocab_size=70_000, max_length=300) as writer:
        writer.add([[69_999, 1]], [[2]])
        wide = writer.finish({}, {})
    assert (wide.meta["id_dtype"], wide.meta["length_dtype"]) == ("uint32", "uint16")
    assert wide.src(0).tolist() == [69_999, 1] and wide.trg(0).tolist() == [2]


def test_a_store_is_reused_while_nothing_changes_and_rebuilt_when_a_file_or_the_tokenizer_does(tmp_path):
    train, valid = write_toy_corpus(tmp_path / "data", n_train=100)
    model_dir = tmp_path / "model"
    config = toy_config(train, valid)
    first = prepare_data(config, model_dir, log=quiet)
    built = (first.train.directory / "meta.json").stat().st_mtime_ns

    messages: list[str] = []
    again = prepare_data(config, model_dir, log=messages.append)
    assert (again.train.directory / "meta.json").stat().st_mtime_ns == built
    assert any("reusing" in m for m in messages) and any("is reused" in m for m in messages)

    pairs = toy_pairs(100, seed=0)  # the corpus write_toy_corpus wrote, with one line changed
    pairs[0] = ("ten ten ten", "zehn zehn zehn")
    Path(f"{train}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    Path(f"{train}.de").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    changed = prepare_data(config, model_dir, log=quiet)
    assert changed.train.src(0).tolist() == changed.src_tokenizer.encode("ten ten ten")

    config.vocab.type = "char"  # another tokenizer: the store is encoded with it
    chars = prepare_data(config, model_dir, log=quiet)
    assert chars.train.src(0).tolist() == chars.src_tokenizer.encode("ten ten ten")
    assert len(chars.train.src(0)) > len(changed.train.src(0))  # one piece a character ("▁" for each space)
    assert chars.train.meta["fingerprint"]["tokenizers"] != changed.train.meta["fingerprint"]["tokenizers"]


def test_runs_that_differ_only_in_train_seed_share_tokenizers_and_store(tmp_path):
    """Seeds of one ensemble: another train.seed reuses the tokenizers and the store (a sample of
    the corpus trains SentencePiece here, so a seed that reached it would change them)."""
    train, valid = write_toy_corpus(tmp_path / "data", n_train=100)
    config = toy_config(train, valid)
    config.vocab.max_sentences = 40
    first = prepare_data(config, tmp_path / "model", log=quiet)
    config.train.seed += 1
    messages: list[str] = []
    again = prepare_data(config, tmp_path / "model", log=messages.append)
    assert any("reusing" in m for m in messages) and any("is reused" in m for m in messages)
    elsewhere = prepare_data(config, tmp_path / "other", log=quiet)  # trained afresh with the new train.seed
    assert elsewhere.src_tokenizer.serialized == first.src_tokenizer.serialized == again.src_tokenizer.serialized


def test_a_prepare_killed_half_way_leaves_no_store_that_is_ever_used(tmp_path, monkeypatch):
    """A child process prepares and dies (os._exit: no clean-up, as with SIGKILL) after its first
    chunk: what it wrote is a hidden temporary folder, never data/train; the next prepare removes it
    and builds a complete store."""
    train, valid = write_toy_corpus(tmp_path / "data", n_train=100)
    model_dir = tmp_path / "model"
    config = toy_config(train, valid)
    monkeypatch.setattr(preparation, "CHUNK_PAIRS", 30)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child never returns
        real_add = TokenStoreWriter.add

        def add_then_die(self, *args, **kwargs):
            real_add(self, *args, **kwargs)
            os._exit(9)

        TokenStoreWriter.add = add_then_die
        try:
            prepare_data(config, model_dir, log=quiet, progress=False)
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    data_dir = model_dir / DATA_DIR
    assert not (data_dir / TRAIN_STORE).exists()
    leftovers = [path for path in data_dir.iterdir() if path.name.startswith(f".{TRAIN_STORE}.")]
    assert len(leftovers) == 1 and read_meta(leftovers[0]) is None  # no meta.json: never complete
    with pytest.raises(CorpusError, match="no complete token store"):
        TokenStore.open(leftovers[0])

    data = prepare_data(config, model_dir, log=quiet)
    assert data.n_train_pairs == 100 and not leftovers[0].exists()


def test_a_damaged_store_is_a_clear_error(tmp_path):
    train, valid = write_toy_corpus(tmp_path / "data", n_train=50)
    store = prepare_data(toy_config(train, valid), tmp_path / "model", log=quiet).train
    ids = store.directory / "trg.ids"
    ids.write_bytes(ids.read_bytes()[:-3])
    with pytest.raises(CorpusError, match=r"trg\.ids has \d+ bytes where \d+ were written"):
        TokenStore.open(store.directory)


def test_a_corpus_that_changes_while_it_is_read_is_an_error_not_a_shifted_line(tmp_path):
    train, valid = write_toy_corpus(tmp_path / "data", n_train=50)
    files = preparation.split_files(toy_config(train, valid), "train")
    pairs = preparation.iter_pairs(files, "strict", expected_lines=51)
    with pytest.raises(CorpusError, match="51 were counted: the files changed while being read"):
        list(pairs)


def test_training_batches_read_the_store_without_copying_it(tmp_path):
    train, valid = write_toy_corpus(tmp_path / "data", n_train=100)
    data = prepare_data(toy_config(train, valid), tmp_path / "model", log=quiet)
    assert isinstance(data.train_src_lengths, np.memmap) and isinstance(data.train_trg_lengths, np.memmap)
    assert isinstance(data.train._ids["src"], np.memmap)
