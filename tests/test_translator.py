"""The Python API's alignments (forced decoding, and the word alignment of a translation) and a
model without attention through every path of the Translator."""

import logging

import numpy as np
import pytest

from attnmt.explain.alignment import NoAttentionError
from attnmt.config import DecodeConfig
from attnmt.translator import Translator
from toy import toy_pairs


@pytest.fixture(scope="module")
def translator(toy_model_dir) -> Translator:
    return Translator.load(toy_model_dir)


@pytest.fixture(scope="module")
def none_translator(toy_none_model_dir) -> Translator:
    return Translator.load(toy_none_model_dir)


def test_the_toy_models_attention_aligns_word_for_word(translator):
    pairs = toy_pairs(30, seed=999)
    alignments = translator.align([s for s, _ in pairs], [t for _, t in pairs])
    for alignment, (source, target) in zip(alignments, pairs):
        assert alignment.src_words == source.split() and alignment.trg_words == target.split()
        assert alignment.attention.shape == (len(alignment.trg_words) + 1, len(alignment.src_words) + 1)
        np.testing.assert_allclose(alignment.attention.sum(axis=1), 1.0, atol=1e-5)
    diagonal = sum(a.links == [(i, i) for i in range(len(a.trg_words))] for a in alignments)
    assert diagonal >= 27, [a.pharaoh() for a in alignments]


def test_forced_decoding_of_its_own_translation_gives_the_searchs_alignment(translator):
    """Two ways to the same alignment: the attention of greedy search, and forced decoding of its output."""
    sources = ["one two three", "seven eight nine ten", "four"]
    translations = translator.translate(sources, beam=1)
    forced = translator.align(sources, [t.text for t in translations])
    for translation, alignment in zip(translations, forced):
        from_search = translation.word_alignment()
        assert from_search.src_words == alignment.src_words and from_search.trg_words == alignment.trg_words
        np.testing.assert_allclose(from_search.attention, alignment.attention, atol=1e-5)
        assert from_search.links == alignment.links


def test_align_keeps_one_column_per_whitespace_word_whatever_the_tokenizer_does(translator):
    # "☃" is unknown to the toy vocabulary (no byte fallback), "fünfzig" is split into many pieces and
    # "\u200b" (a zero-width space) has no pieces at all
    [alignment] = translator.align(["one ☃ two  three"], ["eins fünfzig \u200b zwei"])
    assert alignment.src_words == ["one", "☃", "two", "three"]
    assert alignment.trg_words == ["eins", "fünfzig", "\u200b", "zwei"]
    assert alignment.attention.shape == (5, 5)
    assert all(0 <= s < 4 and t in (0, 1, 3) for s, t in alignment.links)


def test_empty_lines_align_to_nothing(translator):
    alignments = translator.align(["", "one two", ""], ["", "", "eins"])
    assert [a.links for a in alignments] == [[], [], []]
    assert [a.attention.shape for a in alignments] == [(1, 1), (1, 3), (2, 1)]
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        translator.align(["a", "b"], ["c"])


def test_without_attention_translations_carry_no_matrix_and_alignment_is_a_clear_error(none_translator):
    assert not none_translator.model.has_attention
    translations = none_translator.translate(["one two three", "", "seven"], beam=3)
    assert translations[0].text and translations[1].text == ""
    assert all(t.attention is None for t in translations)
    assert all(t.attention is None for t in none_translator.translate_n_best(["four five"], beam=3, n_best=3)[0])
    with pytest.raises(NoAttentionError, match="without attention"):
        translations[0].word_alignment()
    with pytest.raises(NoAttentionError, match="model.attention: none"):
        none_translator.align(["one"], ["eins"])


def test_without_attention_a_long_input_is_still_translated_in_pieces(none_translator, monkeypatch, caplog):
    monkeypatch.setattr(none_translator.config, "decode", DecodeConfig(beam_size=2, max_input_tokens=6))
    with caplog.at_level(logging.WARNING, logger="attnmt.translator"):
        [long] = none_translator.translate(["one two three four five six seven eight nine ten"])
    assert "1 input lines longer than 6 source tokens were translated in pieces" in caplog.text
    [short] = none_translator.translate(["one two"])
    assert long.attention is None and len(long.tokens) > len(short.tokens)
