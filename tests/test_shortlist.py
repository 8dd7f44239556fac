"""The vocabulary shortlist: decoding with it, building it, and the files it is kept in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt.errors import CheckpointError
from attnmt.store import SHORTLIST_FILE, save_shortlist, tokenizers_digest
from attnmt.translator import Translator
from toy import toy_pairs

SENTENCES = [source for source, _ in toy_pairs(40, seed=23, max_words=7)] + ["", "ten"]


@pytest.fixture
def model_copy(toy_model_dir, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(toy_model_dir, copy)
    return copy


def write_shortlist(model_dir: Path, lists: torch.Tensor, frequent: torch.Tensor) -> Translator:
    translator = Translator.load(model_dir)
    save_shortlist(model_dir, lists, frequent, tokenizers_digest(translator.src_tokenizer, translator.trg_tokenizer),
                   {"method": "by hand"})
    return Translator.load(model_dir, shortlist=True)


def test_a_shortlist_of_every_target_piece_decodes_exactly_as_the_full_vocabulary(model_copy):
    full = Translator.load(model_copy)
    src_vocab, trg_vocab = full.src_tokenizer.vocab_size, full.trg_tokenizer.vocab_size
    everything = write_shortlist(model_copy, torch.arange(trg_vocab).repeat(src_vocab, 1), torch.zeros(0, dtype=torch.long))
    for beam in (1, 3):
        expected, found = full.translate(SENTENCES, beam=beam), everything.translate(SENTENCES, beam=beam)
        assert [(t.text, t.score) for t in found] == [(t.text, t.score) for t in expected]
        for a, b in zip(found, expected):
            assert (a.attention == b.attention).all()


def test_a_piece_outside_the_shortlist_is_never_produced(model_copy):
    full = Translator.load(model_copy)
    trg = full.trg_tokenizer
    banned = trg.encode("drei")[0]  # the piece that begins "drei": the word for "three"
    src_vocab, trg_vocab = full.src_tokenizer.vocab_size, trg.vocab_size
    lists = torch.arange(trg_vocab).repeat(src_vocab, 1)
    lists[lists == banned] = -1
    shortlisted = write_shortlist(model_copy, lists, torch.zeros(0, dtype=torch.long))
    sentences = [s for s in SENTENCES if "three" in s.split()] + ["three three three"]
    assert "drei" in " ".join(t.text for t in full.translate(sentences, beam=1))
    for beam in (1, 3):
        for translation in shortlisted.translate(sentences, beam=beam):
            assert banned not in [trg.processor.piece_to_id(piece) for piece in translation.tokens]


def test_attnmt_shortlist_builds_one_that_keeps_the_translations(model_copy, toy_model_dir, tmp_path):
    pairs = toy_pairs(300, seed=0)
    (tmp_path / "train.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (tmp_path / "train.de").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    for method in ("alignment", "cooccurrence"):
        completed = subprocess.run([sys.executable, "-m", "attnmt", "shortlist", str(model_copy), "--src",
                                    str(tmp_path / "train.en"), "--trg", str(tmp_path / "train.de"), "--k", "4",
                                    "--frequent", "2", "--method", method], capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr
        full, shortlisted = Translator.load(model_copy), Translator.load(model_copy, shortlist=True)
        allowed = shortlisted.model.shortlist.allowed(torch.tensor([full.src_tokenizer.encode("one two")]))
        assert len(allowed) < full.trg_tokenizer.vocab_size  # a real shortlist: not every piece
        expected = [t.text for t in full.translate(SENTENCES, beam=3)]
        assert [t.text for t in shortlisted.translate(SENTENCES, beam=3)] == expected, method


def test_a_damaged_or_foreign_shortlist_is_an_error_naming_it(model_copy, tmp_path):
    with pytest.raises(CheckpointError, match=f"has no {SHORTLIST_FILE}"):
        Translator.load(model_copy, shortlist=True)
    full = Translator.load(model_copy)
    vocab = full.trg_tokenizer.vocab_size
    save_shortlist(model_copy, torch.zeros(full.src_tokenizer.vocab_size, 2, dtype=torch.long), torch.tensor([4]),
                   "another model's tokenizers", {})
    with pytest.raises(CheckpointError, match=rf"{SHORTLIST_FILE} was built for other tokenizers"):
        Translator.load(model_copy, shortlist=True)
    digest = tokenizers_digest(full.src_tokenizer, full.trg_tokenizer)
    save_shortlist(model_copy, torch.full((full.src_tokenizer.vocab_size, 2), vocab + 5), torch.tensor([4]), digest, {})
    with pytest.raises(CheckpointError, match=f"names target piece {vocab + 5}"):
        Translator.load(model_copy, shortlist=True)
    path = model_copy / SHORTLIST_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=SHORTLIST_FILE):
        Translator.load(model_copy, shortlist=True)
