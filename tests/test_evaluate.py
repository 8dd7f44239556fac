import math

import pytest
from sacrebleu.metrics import BLEU, CHRF

from attnmt.evaluate import Score, exact_match, format_scores, score_corpus

HYPOTHESES = ["the cat sat on the mat", "a dog runs in the park ."]
REFERENCES = ["the cat sat on a mat", "a dog is running in the park ."]


def test_identical_text_scores_100():
    bleu, chrf = score_corpus(REFERENCES, REFERENCES)
    assert bleu.name == "BLEU" and bleu.value == pytest.approx(100.0)
    assert chrf.name == "chrF2" and chrf.value == pytest.approx(100.0)


def test_bleu_by_hand():
    # 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3; same length so no brevity penalty.
    [bleu] = score_corpus(["the cat sat on the mat"], ["the cat sat on a mat"], metrics=("bleu",))
    assert bleu.value == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)


def test_matches_sacrebleu_directly():
    bleu, chrf = score_corpus(HYPOTHESES, REFERENCES)
    assert bleu.value == pytest.approx(BLEU().corpus_score(HYPOTHESES, [REFERENCES]).score)
    assert chrf.value == pytest.approx(CHRF().corpus_score(HYPOTHESES, [REFERENCES]).score)
    assert bleu.signature == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    assert "nc:6" in chrf.signature


def test_lowercase_changes_signature_and_score():
    hypotheses, references = ["The Cat Sat On The Mat"], ["the cat sat on the mat"]
    [cased] = score_corpus(hypotheses, references, metrics=("bleu",))
    [lowered] = score_corpus(hypotheses, references, metrics=("bleu",), lowercase=True)
    assert "case:lc" in lowered.signature and "case:mixed" in cased.signature
    assert lowered.value == pytest.approx(100.0) and cased.value < 100.0


def test_tokenizer_in_signature():
    [bleu] = score_corpus(HYPOTHESES, REFERENCES, metrics=("bleu",), tokenize="none")
    assert "tok:none" in bleu.signature


def test_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"3 hypotheses but 2 references"):
        score_corpus(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match=r"1 hypotheses but 2 references"):
        exact_match(["a"], ["a", "b"])


def test_empty_and_unknown_inputs_are_errors():
    with pytest.raises(ValueError, match="empty"):
        score_corpus([], [])
    with pytest.raises(ValueError, match="unknown metric"):
        score_corpus(["a"], ["a"], metrics=("meteor",))
    with pytest.raises(ValueError, match="unknown BLEU tokenizer"):
        score_corpus(["a"], ["a"], tokenize="moses")


def test_exact_match():
    assert exact_match(["a b", "c", " d "], ["a b", "x", "d"]) == pytest.approx(2 / 3)
    assert exact_match(["a"], ["a"]) == 1.0


def test_format_scores():
    text = format_scores([Score("BLEU", 35.2149, "nrefs:1|tok:13a"), Score("chrF2", 60.0, "nc:6")])
    assert text.splitlines() == ["BLEU = 35.21  (nrefs:1|tok:13a)", "chrF2 = 60.00  (nc:6)"]
    assert math.isfinite(score_corpus(HYPOTHESES, REFERENCES)[0].value)
