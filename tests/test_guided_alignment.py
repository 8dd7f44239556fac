"""Guided alignment: attention trained towards given word alignments (train.guided_alignment), the
alignment files it reads, and the eflomal helper that writes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnmt.data.alignments import GoldAlignment, grow_diag_final_and, parse_alignment
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.errors import ConfigError, CorpusError
from attnmt.explain.alignment import alignment_error_rate
from attnmt.training import train
from attnmt.training.prepare import piece_links
from attnmt.translator import Translator
from toy import toy_config, toy_pairs, write_toy_corpus


def quiet(message: str) -> None:
    pass


def write_alignments(path: Path, pairs: list[tuple[str, str]], reverse: bool = False) -> Path:
    """Word-for-word links of the toy task (word i to word i), or, reversed, word i to word n-1-i."""
    lines = []
    for source, _ in pairs:
        n = len(source.split())
        lines.append(" ".join(f"{i}-{n - 1 - i if reverse else i}" for i in range(n)))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_pieces_take_the_links_of_their_words(tmp_path):
    tokenizer = SubwordTokenizer.train(["one two three", "four five"] * 20, None, 60, "char", byte_fallback=False)
    pair = ("one two", "four five six")
    src_words = tokenizer.word_of_pieces(tokenizer.encode(pair[0]))
    trg_words = tokenizer.word_of_pieces(tokenizer.encode(pair[1]))
    assert src_words.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # ▁ o n e ▁ t w o
    links = piece_links(parse_alignment("0-2 1-0"), pair, src_words, trg_words, "line 1")
    expected = {(s, t) for s in range(8) for t in range(len(trg_words))
                if (src_words[s], trg_words[t]) in {(0, 2), (1, 0)}}
    assert {tuple(link) for link in links.tolist()} == expected
    with pytest.raises(CorpusError, match="line 7: a link points at target word 3, but the line has 3 target words"):
        piece_links(parse_alignment("0-3"), pair, src_words, trg_words, "line 7")


def test_weight_zero_trains_exactly_as_without_guided_alignment(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=200)
    pairs = toy_pairs(200, seed=0)
    alignments = write_alignments(tmp_path / "train.align", pairs)
    train(toy_config(train_prefix, valid_prefix, max_steps=30, valid_every=30), tmp_path / "plain",
          progress=False, log=quiet)
    train(toy_config(train_prefix, valid_prefix, max_steps=30, valid_every=30, guided_alignment=str(alignments),
                     guided_alignment_weight=0.0), tmp_path / "weight0", progress=False, log=quiet)
    plain, weight0 = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "weight0" / "model.safetensors")
    assert all(torch.equal(plain[name], weight0[name]) for name in plain)


def test_attention_learns_the_alignments_it_is_given(tmp_path):
    """The toy task is word for word: attention finds the diagonal by itself. Guided towards links
    that reverse each sentence, it follows them instead (and, looking at the wrong words, translates
    badly: guided alignment is only as good as the alignments it is given)."""
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=400)
    reversed_links = write_alignments(tmp_path / "train.align", toy_pairs(400, seed=0), reverse=True)
    config = toy_config(train_prefix, valid_prefix, guided_alignment=str(reversed_links), guided_alignment_weight=1.0)
    train(config, tmp_path / "guided", progress=False, log=quiet)
    train(toy_config(train_prefix, valid_prefix), tmp_path / "free", progress=False, log=quiet)

    pairs = [pair for pair in toy_pairs(60, seed=9) if len(pair[0].split()) > 1]
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    reversed_gold = [GoldAlignment(frozenset(links), frozenset(links)) for links in
                     ({(i, len(s.split()) - 1 - i) for i in range(len(s.split()))} for s in sources)]
    aer = {name: alignment_error_rate([a.links for a in Translator.load(tmp_path / name).align(sources, targets)],
                                      reversed_gold).aer for name in ("guided", "free")}
    assert aer["guided"] < 0.2 < 0.6 < aer["free"], aer


def test_an_alignment_file_that_does_not_fit_the_corpus_is_an_error_naming_it(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=50)
    short = tmp_path / "short.align"
    short.write_text("0-0\n" * 49, encoding="utf-8")
    with pytest.raises(CorpusError, match=r"short\.align have 49 lines but the training data .* has 50"):
        train(toy_config(train_prefix, valid_prefix, guided_alignment=str(short)), tmp_path / "a", log=quiet)
    wrong = write_alignments(tmp_path / "wrong.align", toy_pairs(50, seed=0))
    lines = wrong.read_text(encoding="utf-8").splitlines()
    lines[6] += " 0-9"
    wrong.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"wrong\.align, line 7: a link points at target word 9"):
        train(toy_config(train_prefix, valid_prefix, guided_alignment=str(wrong)), tmp_path / "b", log=quiet)
    with pytest.raises(ConfigError, match="model.attention is none"):
        config = toy_config(train_prefix, valid_prefix)
        config.model.attention = "none"
        config.train.guided_alignment = str(wrong)
        config.validate()


def test_grow_diag_final_and_symmetrises_as_moses_does():
    forward = [(0, 0), (1, 1), (2, 3), (3, 2)]
    reverse = [(0, 0), (1, 1), (1, 2), (3, 3)]
    # agreed: 0-0, 1-1; grown: 1-2 (next to 1-1, target 2 unaligned), then 2-3 (next to 1-2, source 2
    # unaligned), then 3-3 (next to 2-3, source 3 unaligned); 3-2, checked after it, joins two aligned words
    assert grow_diag_final_and(forward, reverse) == [(0, 0), (1, 1), (1, 2), (2, 3), (3, 3)]
    assert grow_diag_final_and([(0, 1)], []) == [(0, 1)]  # final-and: both words were unaligned


def test_attnmt_eflomal_aligns_the_training_data_line_by_line(tmp_path):
    pytest.importorskip("eflomal", reason="attnmt eflomal needs eflomal (pip install -e '.[align]')")
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=300)
    config = tmp_path / "toy.yaml"
    config.write_text(toy_config(train_prefix, valid_prefix).to_yaml(), encoding="utf-8")
    (tmp_path / "extra.en").write_text("one two three\n", encoding="utf-8")
    (tmp_path / "extra.de").write_text("eins zwei drei\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "attnmt", "eflomal", str(config), "--out",
                                str(tmp_path / "train.align"), "--extra-src", str(tmp_path / "extra.en"),
                                "--extra-trg", str(tmp_path / "extra.de"), "--extra-out", str(tmp_path / "extra.align")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = (tmp_path / "train.align").read_text(encoding="utf-8").splitlines()
    pairs = toy_pairs(300, seed=0)
    assert len(lines) == 300
    gold = [GoldAlignment(frozenset(links), frozenset(links)) for links in
            ({(i, i) for i in range(len(s.split()))} for s, _ in pairs)]
    score = alignment_error_rate([sorted(parse_alignment(line).possible) for line in lines], gold)
    assert score.aer < 0.1  # the toy task is word for word: a real aligner gets it
    assert (tmp_path / "extra.align").read_text(encoding="utf-8") == "0-0 1-1 2-2\n"
