import math

import pytest
from sacrebleu.metrics import BLEU, CHRF

from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.evaluate import (
    LengthBucket,
    LengthReport,
    Score,
    exact_match,
    format_length_table,
    format_scores,
    length_buckets,
    score_by_length,
    score_corpus,
)

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


def words(n: int) -> str:
    return " ".join(["w"] * n)


def test_length_buckets_by_hand():
    # 3 sources of 1 word, 5 of 6, 4 of 12 and 1 of 23; buckets 1–5, 6–10, 11–15, 21–25 of width 5.
    # With at least 4 sentences each: 1–5 (3) joins 6–10, and 21–25 (1), the last, joins 11–15.
    sources = [words(1)] * 3 + [words(6)] * 5 + [words(12)] * 4 + [words(23)]
    buckets = length_buckets(sources, width=5, min_sentences=4)
    assert [(b.label, len(b.indices)) for b in buckets] == [("1–6", 8), ("12–23", 5)]
    assert buckets[0].indices == tuple(range(8)) and buckets[1].indices == tuple(range(8, 13))
    assert buckets[0].mean_length == pytest.approx((3 * 1 + 5 * 6) / 8)
    assert buckets[1].mean_length == pytest.approx((4 * 12 + 23) / 5)
    one = length_buckets(["", "a  b", "c"], width=5, min_sentences=1)  # an empty source joins the first bucket
    assert [(b.label, b.indices) for b in one] == [("0–2", (0, 1, 2))]
    with pytest.raises(ValueError, match="at least 1"):
        length_buckets(sources, width=0)
    with pytest.raises(ValueError, match="no sentences"):
        length_buckets([])


@settings(max_examples=80, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=80), width=st.integers(1, 8),
       min_sentences=st.integers(1, 30))
def test_length_buckets_partition_the_sentences_in_length_order(lengths, width, min_sentences):
    buckets = length_buckets([words(n) for n in lengths], width, min_sentences)
    assert sorted(i for b in buckets for i in b.indices) == list(range(len(lengths)))
    for bucket in buckets:
        assert bucket.low == min(lengths[i] for i in bucket.indices)
        assert bucket.high == max(lengths[i] for i in bucket.indices)
    assert all(a.high < b.low for a, b in zip(buckets, buckets[1:]))
    assert all(len(b.indices) >= min_sentences for b in buckets) or len(buckets) == 1


def test_each_bucket_is_scored_as_a_corpus_of_its_own():
    sources = ["a b", "c d", "e f g h i j k", "l m n o p q r"]
    references = ["the cat sat down", "a dog ran away", "one two three four five six", "seven eight nine ten eleven twelve"]
    hypotheses = references[:2] + ["nothing like it at all", "nor this"]  # short ones right, long ones wrong
    buckets = length_buckets(sources, width=5, min_sentences=1)
    report = score_by_length("system", hypotheses, references, buckets)
    assert [b.label for b in report.buckets] == ["2", "7"]
    [(short_bleu, short_chrf), (long_bleu, _)] = report.bucket_scores
    assert short_bleu.value == pytest.approx(100.0) and short_chrf.value == pytest.approx(100.0)
    assert long_bleu.value == pytest.approx(0.0)
    assert [s.value for s in report.overall] == [s.value for s in score_corpus(hypotheses, references)]
    assert report.to_dict()["buckets"][0] == {"source_words": "2", "low": 2, "high": 2, "mean_length": 2.0,
                                              "sentences": 2, "BLEU": 100.0, "chrF2": 100.0}
    with pytest.raises(ValueError, match="cover sentence 4 but there are only 3"):
        score_by_length("system", hypotheses[:3], references[:3], buckets)


def test_length_table_by_hand():
    short, long = LengthBucket(1, 10, 6.0, (0, 1)), LengthBucket(11, 30, 15.0, (2,))

    def report(name, values):
        scores = [tuple(Score(metric, value, f"{metric}-sig") for metric, value in zip(("BLEU", "chrF2"), row))
                  for row in values]
        return LengthReport(name, scores[-1], (short, long), tuple(scores[:-1]))

    table = format_length_table([report("att", [(30.0, 55.5), (25.125, 50.0), (28.0, 53.0)]),
                                 report("none", [(29.0, 54.0), (12.0, 40.0), (21.0, 47.0)])])
    assert table.splitlines() == [
        "| source words | sentences | att BLEU | att chrF2 | none BLEU | none chrF2 |",
        "| --- | --- | --- | --- | --- | --- |",
        "| 1–10 | 2 | 30.00 | 55.50 | 29.00 | 54.00 |",
        "| 11–30 | 1 | 25.12 | 50.00 | 12.00 | 40.00 |",
        "| all | 3 | 28.00 | 53.00 | 21.00 | 47.00 |",
        "",
        "BLEU: BLEU-sig",
        "chrF2: chrF2-sig",
    ]
