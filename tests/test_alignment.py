"""Word alignments from attention: merging subword pieces into words, reading links off the
attention, the gold file format, and the alignment error rate against hand-computed values."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.explain.alignment import (
    GoldAlignment,
    WordAlignment,
    alignment_error_rate,
    attention_links,
    check_gold_fits,
    deletion_links,
    link_scores,
    mean_link_scores,
    two_way_links,
    word_link_scores,
    merge_subwords,
)
from attnmt.data.alignments import parse_alignment, read_alignments, read_links
from attnmt.errors import NoAttentionError


def random_attention(trg_len: int, src_len: int, seed: int = 0) -> np.ndarray:
    weights = np.random.default_rng(seed).random((trg_len, src_len)) + 1e-3
    return weights / weights.sum(axis=1, keepdims=True)


# --- subword pieces to words ---------------------------------------------------------------------

def test_merge_subwords_by_hand():
    src = ["▁Ein", "▁Hund", "e", "▁läuft", "</s>"]  # words: Ein | Hunde | läuft | </s>
    trg = ["▁A", "▁do", "g", "</s>"]  # words: A | dog | </s>
    attention = np.array(
        [
            [0.7, 0.1, 0.1, 0.0, 0.1],
            [0.1, 0.5, 0.2, 0.1, 0.1],
            [0.3, 0.1, 0.0, 0.3, 0.3],
            [0.0, 0.0, 0.0, 0.2, 0.8],
        ]
    )
    words, src_words, trg_words = merge_subwords(attention, src, trg)
    assert src_words == ["Ein", "Hunde", "läuft", "</s>"]
    assert trg_words == ["A", "dog", "</s>"]
    expected = np.array(
        [
            [0.7, 0.2, 0.0, 0.1],
            [0.2, 0.4, 0.2, 0.2],  # mean of "▁do" -> [.1,.7,.1,.1] and "g" -> [.3,.1,.3,.3]
            [0.0, 0.0, 0.2, 0.8],
        ]
    )
    np.testing.assert_allclose(words, expected)


def test_merge_subwords_special_tokens_and_leading_pieces():
    src = ["la", "▁x", "</s>", "y"]  # a first piece without "▁", and a piece after a special token
    words, src_words, _ = merge_subwords(np.full((1, 4), 0.25), src, ["</s>"])
    assert src_words == ["la", "x", "</s>", "y"]
    np.testing.assert_allclose(words, [[0.25, 0.25, 0.25, 0.25]])


def test_merge_subwords_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 2\)"):
        merge_subwords(np.ones((2, 2)), ["▁a", "▁b"], ["▁x", "▁y", "</s>"])


PIECES = st.sampled_from(["▁a", "b", "▁cd", "e", "</s>", "<unk>", "▁"])


@settings(max_examples=60, deadline=None)
@given(
    src=st.lists(PIECES, min_size=1, max_size=8),
    trg=st.lists(PIECES, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_merge_subwords_rows_sum_to_one(src, trg, seed):
    words, src_words, trg_words = merge_subwords(random_attention(len(trg), len(src), seed), src, trg)
    assert words.shape == (len(trg_words), len(src_words))
    np.testing.assert_allclose(words.sum(axis=1), 1.0)
    assert (words >= 0).all()


def test_byte_pieces_stay_inside_their_word():
    # "☃" unknown to the vocabulary, spelt as three UTF-8 bytes by SentencePiece's byte fallback
    src = ["▁a", "▁", "<0xE2>", "<0x98>", "<0x83>", "x", "▁b", "</s>"]
    words, src_words, _ = merge_subwords(np.full((1, 8), 0.125), src, ["</s>"])
    assert len(src_words) == 4  # a | ☃x | b | </s>
    assert src_words[0] == "a" and src_words[2:] == ["b", "</s>"]
    np.testing.assert_allclose(words, [[0.125, 0.625, 0.125, 0.125]])


# --- links ---------------------------------------------------------------------------------------


def test_each_target_word_links_to_the_source_word_it_attends_to_most():
    # columns: Ein Hund bellt </s>; rows: A dog barks . </s>
    attention = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.2, 0.6, 0.1, 0.1],
            [0.1, 0.2, 0.6, 0.1],
            [0.1, 0.1, 0.3, 0.5],  # "." looks at </s> most: unaligned, </s> is the NULL word
            [0.0, 0.0, 0.1, 0.9],  # the </s> row is never a link
        ]
    )
    assert attention_links(attention) == [(0, 0), (1, 1), (2, 2)]
    alignment = WordAlignment.from_attention(attention, ["Ein", "Hund", "bellt"], ["A", "dog", "barks", "."])
    assert alignment.pharaoh() == "0-0 1-1 2-2"
    assert alignment.attention_labels == (["Ein", "Hund", "bellt", "</s>"], ["A", "dog", "barks", ".", "</s>"])


def test_many_target_words_may_share_a_source_word_and_a_word_without_pieces_links_nowhere():
    attention = np.array([[0.8, 0.2], [0.6, 0.4], [0.0, 0.0], [0.1, 0.9]])  # row 2: a word the tokenizer dropped
    assert attention_links(attention) == [(0, 0), (0, 1)]


# --- gold files ----------------------------------------------------------------------------------


def test_each_target_piece_links_to_the_source_word_whose_deletion_hurts_it_most():
    # rows: target pieces "▁Hund" "e" "▁bellt" then </s>; columns: source words "dogs" "bark" "loudly"
    effects = np.array([[-3.0, -0.5, 0.1],
                        [-0.2, -0.1, -0.4],
                        [-0.1, -2.0, -1.5],
                        [-9.0, -9.0, -9.0]])  # </s>: never linked
    groups = [[0, 1], [2]]  # target words: "Hunde" (two pieces), "bellt"
    assert deletion_links(effects, groups) == [(0, 0), (2, 0), (1, 1)]  # a word takes its pieces' links
    assert deletion_links(effects, groups, both_ways=True) == [(0, 0), (1, 1)]  # "loudly" hurts "▁bellt" less than "bark" does
    assert deletion_links(np.array([[0.5, 0.0], [-1.0, -1.0]]), [[0]]) == []  # no deletion lowers it: unlinked
    assert deletion_links(np.zeros((1, 2)), []) == []  # an empty target
    attention = np.array([[0.1, 0.1, 0.7, 0.1],  # weighted by attention: "▁Hund" 0.3, 0.05, 0 -> "dogs"
                          [0.0, 0.0, 1.0, 0.0],  # "e": 0, 0, 0.4 -> "loudly"
                          [0.0, 0.1, 0.8, 0.1],  # "▁bellt": 0, 0.2, 1.2 -> "loudly" (looked at, and needed)
                          [0.0, 0.0, 0.0, 1.0]])
    assert deletion_links(effects, groups, attention=attention) == [(0, 0), (2, 0), (2, 1)]


def test_the_deletion_test_aligns_a_word_for_word_translation_word_for_word(toy_model_dir):
    from attnmt.translator import Translator

    translator = Translator.load(toy_model_dir)
    for deletion_only in (True, False):
        [alignment] = translator.align(["two nine four one"], ["zwei neun vier eins"], by_deletion=True,
                                       deletion_only=deletion_only)
        assert alignment.links == [(0, 0), (1, 1), (2, 2), (3, 3)]
        assert alignment.attention.shape == (5, 5)  # the attention is still there, to look at


def test_two_models_link_the_words_both_score_highest_together():
    # forward: the en→de model's scores (target words "Hunde" "bellen", source words "the" "dogs" "bark");
    # alone it links "Hunde" to "the" (0.5 > 0.4)
    forward = np.array([[0.5, 0.4, 0.1],
                        [0.1, 0.2, 0.7]])
    backward = np.array([[0.3, 0.1],  # the de→en model's scores, (source words, target words)
                         [0.9, 0.1],
                         [0.0, 0.8]])
    # products: "Hunde" 0.15, 0.36, 0 -> "dogs"; "bellen" 0.01, 0.02, 0.56 -> "bark"
    assert two_way_links(forward, backward, both_ways=False) == [(1, 0), (2, 1)]
    assert two_way_links(forward, backward) == [(1, 0), (2, 1)]  # each is also its source word's best
    two_targets_one_source = np.array([[0.1, 0.9], [0.2, 0.8]])  # both target words look at source word 1
    assert two_way_links(two_targets_one_source, np.ones((2, 2)), both_ways=False) == [(1, 0), (1, 1)]
    assert two_way_links(two_targets_one_source, np.ones((2, 2))) == [(1, 0)]  # source 1's best is target 0
    assert two_way_links(np.zeros((1, 2)), np.ones((2, 1))) == []  # no score above 0: unlinked
    assert two_way_links(np.zeros((0, 2)), np.zeros((2, 0))) == []  # an empty target
    with pytest.raises(ValueError, match="do not fit"):
        two_way_links(forward, forward)


def test_link_scores_multiply_attention_and_drop_and_words_take_their_pieces_largest():
    effects = np.array([[-2.0, 0.5], [-1.0, -3.0], [-9.0, -9.0]])  # two target pieces and </s>; two source words
    attention = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])  # </s> column last
    np.testing.assert_allclose(link_scores(effects, attention), [[1.0, 0.0], [0.1, 2.4]])  # a rise counts as 0
    np.testing.assert_allclose(link_scores(effects, None), [[2.0, 0.0], [1.0, 3.0]])
    np.testing.assert_allclose(link_scores(None, attention), [[0.5, 0.25], [0.1, 0.8]])
    np.testing.assert_allclose(word_link_scores(link_scores(effects, None), [[0, 1], []]), [[2.0, 3.0], [0.0, 0.0]])


def test_a_reverse_model_aligns_a_word_for_word_translation_word_for_word(toy_model_dir, toy_reverse_model_dir):
    from attnmt.translator import Translator

    translator, reverse = Translator.load(toy_model_dir), Translator.load(toy_reverse_model_dir)
    for reading in ({}, {"both_ways": True}, {"by_deletion": True, "both_ways": True}):
        [alignment] = translator.align(["two nine four one"], ["zwei neun vier eins"], reverse=reverse, **reading)
        assert alignment.links == [(0, 0), (1, 1), (2, 2), (3, 3)]
    with pytest.raises(ValueError, match="must translate de→en"):
        translator.align(["two"], ["zwei"], reverse=translator)
    with pytest.raises(ValueError, match="shift and by_pieces do not apply"):
        translator.align(["two"], ["zwei"], reverse=reverse, shift=True)


def test_models_of_one_direction_combine_by_their_mean_word_scores():
    # two en→de models' scores for target words "Hunde" "bellen" over "the" "dogs" "bark": the first
    # alone links "Hunde" to "the" (0.5 > 0.4), the second is sure of "dogs"; their mean is not
    first = np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    second = np.array([[0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    np.testing.assert_allclose(mean_link_scores([first, second]), [[0.3, 0.6, 0.1], [0.05, 0.15, 0.8]])
    assert two_way_links(first, np.ones((3, 2))) == [(0, 0), (2, 1)]
    assert two_way_links(mean_link_scores([first, second]), np.ones((3, 2))) == [(1, 0), (2, 1)]
    np.testing.assert_array_equal(mean_link_scores([first]), first)
    with pytest.raises(ValueError, match=r"do not fit: shapes \[\(2, 2\), \(2, 3\)\].*the same words"):
        mean_link_scores([first, first[:, :2]])


def test_models_with_other_vocabularies_align_together(toy_model_dir, toy_reverse_model_dir, toy_none_model_dir,
                                                       tmp_path):
    from toy import toy_config, write_toy_corpus

    from attnmt.config import VocabConfig
    from attnmt.training.loop import train
    from attnmt.translator import Translator

    config = toy_config(*write_toy_corpus(tmp_path / "data", n_train=400), seed=2)
    config.vocab = VocabConfig(type="bpe", size=40, joint=False, byte_fallback=False)  # not the fixtures' unigram
    train(config, tmp_path / "bpe", progress=False, log=lambda message: None)
    translator, reverse, bpe = (Translator.load(path) for path in (toy_model_dir, toy_reverse_model_dir, tmp_path / "bpe"))
    pieces = [[model.trg_tokenizer.id_to_piece(i) for i in model.trg_tokenizer.encode_batch(["zwei neun vier eins"])[0]]
              for model in (translator, bpe)]
    assert pieces[0] != pieces[1]  # the two en→de models cut the target into different pieces
    pair = (["two nine four one"], ["zwei neun vier eins"])
    for reading in ({"both_ways": True}, {"by_deletion": True, "both_ways": True}):
        alone = translator.align(*pair, reverse=reverse, **reading)[0].links
        assert translator.align(*pair, reverse=[reverse, reverse], also=[translator], **reading)[0].links == alone
        combined = translator.align(*pair, reverse=reverse, also=[bpe], **reading)[0].links
        assert combined == [(0, 0), (1, 1), (2, 2), (3, 3)]
    with pytest.raises(ValueError, match="give reverse= too"):
        translator.align(*pair, also=[bpe])
    with pytest.raises(NoAttentionError):  # every model of also= is read: one without attention cannot be
        translator.align(*pair, reverse=reverse, also=iter([bpe, Translator.load(toy_none_model_dir)]))
    with pytest.raises(ValueError, match="each model of also= must translate en→de"):
        translator.align(*pair, reverse=reverse, also=[reverse])


def test_gold_line_sure_and_possible_links():
    gold = parse_alignment("0-0 1-2p 3p4 5?5 2-2P 6-7")
    assert gold.sure == {(0, 0), (6, 7)}
    assert gold.possible == {(0, 0), (6, 7), (1, 2), (3, 4), (5, 5), (2, 2)}
    assert gold.largest_indices == (6, 7)
    empty = parse_alignment("   ")
    assert empty.sure == empty.possible == frozenset() and empty.largest_indices == (-1, -1)


@pytest.mark.parametrize("bad", ["0-", "a-1", "1-2x", "1--2", "1:2", "-1-2"])
def test_unreadable_links_name_the_place(bad):
    with pytest.raises(ValueError, match=rf"gold.txt, line 3: cannot read the link '{bad}'"):
        parse_alignment(f"0-0 {bad}", "gold.txt, line 3")


def test_read_alignments_from_a_file_with_an_empty_line(tmp_path):
    path = tmp_path / "gold.align"
    path.write_text("0-0 1-1p\n\n2-1\n", encoding="utf-8")
    gold = read_alignments(path)
    assert [len(g.sure) for g in gold] == [1, 0, 1]
    assert [len(g.possible) for g in gold] == [2, 0, 1]
    assert read_links(path) == [[(0, 0), (1, 1)], [], [(2, 1)]]  # an aligner's links, sure or possible alike


def test_gold_that_does_not_fit_the_text_is_an_error():
    gold = [parse_alignment("0-0 1-1"), parse_alignment("0-0 3-1")]
    check_gold_fits(gold, [2, 4], [2, 2], "gold.align")
    with pytest.raises(ValueError, match=r"gold.align, line 2: a link points at source word 3, but the pair has 3 source"):
        check_gold_fits(gold, [2, 3], [2, 2], "gold.align")
    with pytest.raises(ValueError, match=r"line 1: a link points at target word 1, but the pair has 1 target"):
        check_gold_fits(gold, [2, 4], [1, 2], "gold.align")
    with pytest.raises(ValueError, match="gold.align has 2 lines but there are 3 sentence pairs"):
        check_gold_fits(gold, [2, 4, 1], [2, 2, 1], "gold.align")


# --- alignment error rate ------------------------------------------------------------------------

GOLD_FILE = "0-0 1-1 2-2p 2-3p\n0-1 1-0 2-2\n"
# sentence 1: S = {0-0, 1-1}, P = S + {2-2, 2-3}; sentence 2: S = P = {0-1, 1-0, 2-2}
PREDICTED_FILE = "0-0 1-2 2-2\n0-1 1-1\n"
# sentence 1: 0-0 sure, 1-2 wrong, 2-2 possible; sentence 2: 0-1 sure, 1-1 wrong
# |A| = 5, |S| = 5, |A∩S| = 1 + 1 = 2, |A∩P| = 2 + 1 = 3
EXPECTED_AER = 1 - (2 + 3) / (5 + 5)  # 0.5
EXPECTED_PRECISION = 3 / 5
EXPECTED_RECALL = 2 / 5


def test_aer_of_hand_made_files(tmp_path):
    (tmp_path / "gold.align").write_text(GOLD_FILE, encoding="utf-8")
    (tmp_path / "predicted.align").write_text(PREDICTED_FILE, encoding="utf-8")
    gold = read_alignments(tmp_path / "gold.align")
    predicted = [g.possible for g in read_alignments(tmp_path / "predicted.align")]
    score = alignment_error_rate(predicted, gold)
    assert score.aer == pytest.approx(EXPECTED_AER)
    assert score.precision == pytest.approx(EXPECTED_PRECISION)
    assert score.recall == pytest.approx(EXPECTED_RECALL)
    assert (score.sentences, score.links, score.sure, score.possible) == (2, 5, 5, 7)
    assert str(score).startswith("AER = 50.00%  precision = 60.00%  recall = 40.00%  (2 sentences, 5 links")


def test_aer_is_zero_between_sure_and_possible_and_one_when_all_wrong():
    gold = [parse_alignment("0-0 1-1 2-2p 2-3p")]
    assert alignment_error_rate([[(0, 0), (1, 1)]], gold).aer == 0.0  # exactly S
    assert alignment_error_rate([[(0, 0), (1, 1), (2, 2), (2, 3)]], gold).aer == 0.0  # exactly P
    only_possible = alignment_error_rate([[(2, 2)]], gold)  # 1 - (0 + 1) / (1 + 2)
    assert only_possible.aer == pytest.approx(2 / 3) and only_possible.precision == 1.0 and only_possible.recall == 0
    assert alignment_error_rate([[(5, 5), (0, 1)]], gold).aer == 1.0


def test_aer_without_links_is_undefined_not_zero():
    score = alignment_error_rate([[]], [GoldAlignment(frozenset(), frozenset())])
    assert math.isnan(score.aer) and math.isnan(score.precision) and math.isnan(score.recall)
    assert "AER = n/a" in str(score)
    with pytest.raises(ValueError, match="1 predicted alignments but 2 gold"):
        alignment_error_rate([[]], [parse_alignment("0-0"), parse_alignment("")])


LINKS = st.frozensets(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=12)


@settings(max_examples=100, deadline=None)
@given(sure=LINKS, extra_possible=LINKS, predicted=LINKS, wrong=st.tuples(st.integers(5, 9), st.integers(0, 9)))
def test_aer_invariants(sure, extra_possible, predicted, wrong):
    gold = [GoldAlignment(sure, sure | extra_possible)]
    score = alignment_error_rate([predicted], gold)
    if predicted or sure:
        assert 0.0 <= score.aer <= 1.0
        # a link outside P never lowers the AER
        assert alignment_error_rate([predicted | {wrong}], gold).aer >= score.aer
    # AER is 0 for every prediction between S and P
    between = sure | (predicted & extra_possible)
    if between:
        assert alignment_error_rate([between], gold).aer == pytest.approx(0.0)
