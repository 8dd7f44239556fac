"""Diagnostics read off attention: coverage, omission and repetition flags, entropy, </s> mass, on
hand-made matrices and on translations through every way users get them; and the deletion test,
which asks the model whether a translation needs each source word."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnmt.errors import NoAttentionError
from attnmt.explain.diagnostics import (OMISSION_BELOW, attended_regret, deletion_variants, diagnose_matrix,
                                        with_deletion_test)
from attnmt.translator import Translator


def matrix(rows: list[list[float]]) -> np.ndarray:
    """A word-level attention matrix; the last row is </s>'s, the last column the source </s>."""
    return np.asarray(rows, dtype=float)


SRC, TRG = ["ein", "roter", "Ball"], ["a", "red", "ball"]


def test_coverage_is_the_attention_each_source_word_received_from_the_target_words():
    attention = matrix([[0.7, 0.2, 0.0, 0.1],
                        [0.1, 0.8, 0.1, 0.0],
                        [0.0, 0.1, 0.9, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])  # the </s> row is not counted
    found = diagnose_matrix(attention, SRC, TRG)
    assert found.coverage == pytest.approx([0.8, 1.1, 1.0])
    assert found.eos_mass == pytest.approx([0.1, 0.0, 0.0])
    assert found.entropy[1] == pytest.approx(-(0.1 * math.log(0.1) * 2 + 0.8 * math.log(0.8)))
    assert found.entropy[2] == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))
    assert not found.flagged and found.omitted == [] and found.over_attended == []


def test_a_source_word_nobody_looked_at_is_flagged_as_a_possible_omission():
    attention = matrix([[0.9, 0.05, 0.05, 0.0],  # "roter" is left out: the output is "a ball"
                        [0.1, 0.05, 0.85, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])
    found = diagnose_matrix(attention, SRC, ["a", "ball"])
    assert found.coverage[1] == pytest.approx(0.1) and found.coverage[1] < OMISSION_BELOW
    assert found.omitted == [1] and found.over_attended == [] and found.flagged


def test_a_source_word_translated_again_and_again_is_flagged_as_over_attended():
    rows = [[0.0, 0.95, 0.0, 0.05]] * 4 + [[0.0, 0.05, 0.9, 0.05], [0.0, 0.0, 0.0, 1.0]]  # "red red red red ball"
    found = diagnose_matrix(matrix(rows), SRC, ["red"] * 4 + ["ball"])
    assert found.coverage == pytest.approx([0.0, 3.85, 0.9])
    assert found.over_attended == [1] and found.omitted == [0]  # and "ein" got nothing: nobody wrote "a"
    assert found.mean_eos_mass == pytest.approx(0.05)


def test_thresholds_can_be_chosen_and_shapes_are_checked():
    attention = matrix([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert diagnose_matrix(attention, SRC, ["x"], omission_below=0.25).omitted == [2]
    assert diagnose_matrix(attention, SRC, ["x"], omission_below=0.4).omitted == [1, 2]
    with pytest.raises(ValueError, match="the words give"):
        diagnose_matrix(attention, SRC, ["x", "y"])


def test_translations_carry_their_diagnostics_and_the_cli_writes_one_json_line_per_input_line(toy_model_dir, tmp_path):
    translator = Translator.load(toy_model_dir)
    first, empty = translator.translate(["one two three", "  "], beam=3)
    diagnostics = first.diagnostics
    assert diagnostics.src_words == ["one", "two", "three"] and len(diagnostics.entropy) == len(first.text.split())
    assert sum(diagnostics.coverage) + sum(diagnostics.eos_mass) == pytest.approx(len(first.text.split()), abs=1e-4)
    assert empty.diagnostics.coverage == [] and not empty.diagnostics.flagged
    source = tmp_path / "in.en"
    source.write_text("one two three\n\nfour five\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "-i", str(source),
                                "--beam", "3", "--diagnostics", str(tmp_path / "diag.jsonl")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in (tmp_path / "diag.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 and lines[1]["src_words"] == [] and lines[2]["src_words"] == ["four", "five"]
    assert lines[0]["coverage"] == pytest.approx(diagnostics.coverage, abs=1e-4)


def test_a_model_without_attention_has_no_diagnostics(toy_none_model_dir):
    translation = Translator.load(toy_none_model_dir).translate(["one two"])[0]
    with pytest.raises(NoAttentionError):
        translation.diagnostics


def test_the_untranslated_flag_is_the_one_word_with_the_largest_score_if_that_is_above_the_threshold():
    attention = matrix([[0.9, 0.0, 0.0, 0.1], [0.0, 0.0, 0.9, 0.1], [0.0, 0.0, 0.0, 1.0]])
    found = diagnose_matrix(attention, SRC, ["a", "ball"])
    assert found.deletion_gain is None and found.untranslated_score is None and found.untranslated == []
    tested = with_deletion_test(found, [-4.0, 0.3, -2.5], [0.0, 0.5, 1.0], untranslated_above=0.0)
    assert tested.untranslated_score == pytest.approx([-4.0, 0.8, -1.5])  # deletion gain + attended regret
    assert tested.untranslated == [1] and tested.flagged
    assert tested.coverage == found.coverage  # the attention's figures are kept
    plain = tested.to_dict()
    assert plain["deletion_gain"] == [-4.0, 0.3, -2.5] and plain["attended_regret"] == [0.0, 0.5, 1.0]
    assert plain["untranslated_score"] == [-4.0, 0.8, -1.5] and plain["untranslated"] == [1]
    both_above = with_deletion_test(found, [-4.0, 0.3, -2.5], [0.0, 0.5, 4.0], untranslated_above=0.0)
    assert both_above.untranslated == [2]  # 1.5 > 0.8 > 0: only the largest
    assert with_deletion_test(found, [-4.0, 0.3, -2.5], [0.0, 0.5, 1.0], untranslated_above=0.8).untranslated == []
    with pytest.raises(ValueError, match="2 deletion gains for 3 source words"):
        with_deletion_test(found, [-4.0, 0.3], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="1 attended regrets for 3 source words"):
        with_deletion_test(found, [-4.0, 0.3, 0.0], [0.0])


def test_the_attended_regret_weighs_each_steps_regret_by_the_attention_each_source_word_got():
    """Two target pieces of one word and </s>; two source words of one piece each and the source </s>."""
    attention = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.0, 0.5, 0.5]])  # (trg pieces + 1, src pieces + 1)
    regret = np.array([1.0, 3.0, 2.0])  # (trg pieces + 1,)
    found = attended_regret(attention, regret, [[0], [1], [2]], [[0, 1], [2]])
    # the word's row: its pieces' attention × regret averaged, (0.8, 0.1) * 1 and (0.2, 0.6) * 3 -> (0.7, 0.95);
    # the </s> row: (0.0, 0.5) * 2; the source </s> column left out
    np.testing.assert_allclose(found, [0.7, 1.95])
    np.testing.assert_allclose(attended_regret(attention, np.zeros(3), [[0], [1], [2]], [[0, 1], [2]]), [0.0, 0.0])
    assert attended_regret(np.ones((1, 1)), np.ones(1), [[0]], [[0]]).shape == (0,)  # nothing in, nothing out


@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=3), max_size=6))
def test_each_deletion_variant_is_the_source_without_exactly_one_word(words):
    variants = deletion_variants(words)
    assert len(variants) == len(words)
    for j, variant in enumerate(variants):
        assert variant == [piece for word in words[:j] + words[j + 1 :] for piece in word]


def test_the_deletion_test_finds_the_source_word_a_translation_left_out(toy_model_dir):
    """The toy model translates number words one for one: a complete translation is less probable
    without any of its source words, and one that skips "two" gains most when "two" is gone (other
    words may gain too: this model also counts words, and any deletion shortens the source); skipping it
    goes against the model where it looked at "two" (more regret on "two" than in the complete one)."""
    translator = Translator.load(toy_model_dir)
    source = "one two three four"
    full, skipped = translator.diagnose_pairs([source, source], ["eins zwei drei vier", "eins drei vier"])
    assert (np.array(full.deletion_gain) < 0).all(), full.deletion_gain
    assert skipped.deletion_gain[1] > 0 and int(np.argmax(skipped.deletion_gain)) == 1, skipped.deletion_gain
    assert skipped.attended_regret[1] > full.attended_regret[1] + 1.0, (skipped.attended_regret, full.attended_regret)
    assert skipped.untranslated == [1] and full.untranslated == []
    whole, *without = translator.score([source] + [" ".join(w for i, w in enumerate(source.split()) if i != j)
                                                   for j in range(4)], ["eins drei vier"] * 5)
    np.testing.assert_allclose(skipped.deletion_gain, [score.log_prob - whole.log_prob for score in without], atol=1e-4)
    assert translator.diagnose_pairs([source], ["eins drei vier"], deletion_test=False)[0].deletion_gain is None


def test_a_greedy_translation_has_no_regret_so_its_untranslated_score_is_its_deletion_gain(toy_model_dir):
    translator = Translator.load(toy_model_dir)
    translations = translator.translate(["five six seven", "one two three four", "nine"], beam=1)
    for found in translator.diagnose(translations):
        np.testing.assert_allclose(found.attended_regret, 0.0, atol=1e-4)  # every token was the model's first choice
        np.testing.assert_allclose(found.untranslated_score, found.deletion_gain, atol=1e-4)


def test_diagnose_runs_the_deletion_test_on_the_search_output(toy_model_dir, tmp_path):
    translator = Translator.load(toy_model_dir)
    translation, empty = translator.translate(["five six seven", ""], beam=3)
    assert translation.text == "fünf sechs sieben"
    found, nothing = translator.diagnose([translation, empty])
    assert found.coverage == translation.diagnostics.coverage and found.untranslated == []
    [given] = translator.diagnose_pairs(["five six seven"], [translation.text])
    np.testing.assert_allclose(found.deletion_gain, given.deletion_gain, atol=1e-4)
    np.testing.assert_allclose(found.attended_regret, given.attended_regret, atol=1e-4)
    assert nothing.deletion_gain == [] and not nothing.flagged
    assert translator.diagnose([translation], deletion_test=False)[0].deletion_gain is None
    source = tmp_path / "in.en"
    source.write_text("five six seven\n\none\n", encoding="utf-8")
    command = [sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "-i", str(source), "--beam", "3"]
    completed = subprocess.run(command + ["--diagnostics", str(tmp_path / "d.jsonl"), "--deletion-test"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [len(line["deletion_gain"]) for line in lines] == [3, 0, 1]
    assert [len(line["untranslated_score"]) for line in lines] == [3, 0, 1]
    assert lines[0]["deletion_gain"] == pytest.approx(found.deletion_gain, abs=1e-3)
    refused = subprocess.run(command + ["--deletion-test"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--deletion-test goes with --diagnostics" in refused.stderr
