"""Corpus-level BLEU and chrF through sacreBLEU, with the signature that makes a score reproducible.

Scores are always computed on detokenized text: sacreBLEU tokenizes it itself (``tokenize``), so
numbers are comparable across systems. Report every score together with its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF

METRICS = ("bleu", "chrf")


@dataclass(frozen=True)
class Score:
    """One corpus score: ``name`` as sacreBLEU prints it ("BLEU", "chrF2"), ``value`` in 0..100."""

    name: str
    value: float
    signature: str

    def __str__(self) -> str:
        return f"{self.name} = {self.value:.2f}  ({self.signature})"


def _check_pair(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up line by line"
        )
    if not hypotheses:
        raise ValueError("no sentences to score: hypotheses and references are empty")


def _make_metric(name: str, lowercase: bool, tokenize: str) -> BLEU | CHRF:
    if name == "bleu":
        if tokenize not in BLEU.TOKENIZERS:
            raise ValueError(f"unknown BLEU tokenizer {tokenize!r}; choose one of {sorted(BLEU.TOKENIZERS)}")
        return BLEU(lowercase=lowercase, tokenize=tokenize)
    if name == "chrf":
        return CHRF(lowercase=lowercase)  # chrF scores characters: it has no tokenizer
    raise ValueError(f"unknown metric {name!r}; choose from {METRICS}")


def score_corpus(
    hypotheses: list[str],
    references: list[str],
    metrics: Sequence[str] = METRICS,
    lowercase: bool = False,
    tokenize: str = "13a",
) -> list[Score]:
    """Score detokenized ``hypotheses`` against one reference each; one Score per metric, in order."""
    _check_pair(hypotheses, references)
    scores = []
    for metric_name in metrics:
        metric = _make_metric(metric_name.lower(), lowercase, tokenize)
        result = metric.corpus_score(list(hypotheses), [list(references)])
        signature = str(metric.get_signature())
        scores.append(Score(name=result.name, value=float(result.score), signature=signature))
    return scores


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction (0..1) of hypotheses equal to their reference, ignoring surrounding whitespace."""
    _check_pair(hypotheses, references)
    matches = sum(hyp.strip() == ref.strip() for hyp, ref in zip(hypotheses, references))
    return matches / len(hypotheses)


def format_scores(scores: Sequence[Score]) -> str:
    """One line per score: ``BLEU = 35.21  (nrefs:1|case:mixed|...)``."""
    return "\n".join(str(score) for score in scores)


# --- quality by source sentence length (the figure of Bahdanau et al. 2014) ----------------------


@dataclass(frozen=True)
class LengthBucket:
    """The sentences whose source has ``low`` to ``high`` words (whitespace-separated tokens)."""

    low: int
    high: int
    mean_length: float
    indices: tuple[int, ...]  # positions in the test set, ascending

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}–{self.high}"


def length_buckets(sources: Sequence[str], width: int = 5, min_sentences: int = 20) -> list[LengthBucket]:
    """Group sentences by source length in words: buckets of ``width`` words (1–5, 6–10, ...; an
    empty source joins the first), each with fewer than ``min_sentences`` sentences merged into the
    next longer one (the last into the one before), so that no score rests on a handful of
    sentences. A bucket's ``low`` and ``high`` are the shortest and longest source in it."""
    if width < 1 or min_sentences < 1:
        raise ValueError(f"bucket width and minimum size must be at least 1, got {width} and {min_sentences}")
    if not sources:
        raise ValueError("no sentences to put into length buckets")
    lengths = [len(source.split()) for source in sources]
    by_width: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        by_width.setdefault(max(length - 1, 0) // width, []).append(index)
    groups: list[list[int]] = []
    pending: list[int] = []
    for key in sorted(by_width):
        pending += by_width[key]
        if len(pending) >= min_sentences:
            groups.append(pending)
            pending = []
    if pending:
        if groups:
            groups[-1] += pending
        else:
            groups.append(pending)
    buckets = []
    for group in groups:
        group_lengths = [lengths[i] for i in group]
        buckets.append(LengthBucket(min(group_lengths), max(group_lengths), sum(group_lengths) / len(group),
                                    tuple(sorted(group))))
    return buckets


@dataclass(frozen=True)
class LengthReport:
    """One system's scores on the whole test set and on each length bucket (in bucket order)."""

    name: str
    overall: tuple[Score, ...]
    buckets: tuple[LengthBucket, ...]
    bucket_scores: tuple[tuple[Score, ...], ...]  # one tuple of scores (one per metric) per bucket

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        def values(scores: Sequence[Score]) -> dict[str, float]:
            return {score.name: round(score.value, 2) for score in scores}

        return {
            "name": self.name,
            "overall": values(self.overall),
            "signatures": {score.name: score.signature for score in self.overall},
            "buckets": [
                {"source_words": bucket.label, "low": bucket.low, "high": bucket.high,
                 "mean_length": round(bucket.mean_length, 2), "sentences": len(bucket.indices), **values(scores)}
                for bucket, scores in zip(self.buckets, self.bucket_scores)
            ],
        }


def score_by_length(
    name: str,
    hypotheses: list[str],
    references: list[str],
    buckets: Sequence[LengthBucket],
    metrics: Sequence[str] = METRICS,
    lowercase: bool = False,
    tokenize: str = "13a",
) -> LengthReport:
    """Corpus scores of ``hypotheses`` overall and within each bucket (BLEU is not an average of
    sentence scores: each bucket is scored as a corpus of its own)."""
    overall = score_corpus(hypotheses, references, metrics, lowercase, tokenize)
    per_bucket = []
    for bucket in buckets:
        if bucket.indices and bucket.indices[-1] >= len(hypotheses):
            raise ValueError(f"the length buckets cover sentence {bucket.indices[-1] + 1} but there are only "
                             f"{len(hypotheses)} hypotheses")
        picked_hypotheses = [hypotheses[i] for i in bucket.indices]
        picked_references = [references[i] for i in bucket.indices]
        per_bucket.append(tuple(score_corpus(picked_hypotheses, picked_references, metrics, lowercase, tokenize)))
    return LengthReport(name, tuple(overall), tuple(buckets), tuple(per_bucket))


def format_length_table(reports: Sequence[LengthReport]) -> str:
    """A Markdown table: one row per length bucket and one for the whole set; per system, one column
    per metric. The signatures follow the table."""
    if not reports:
        raise ValueError("no systems to tabulate")
    buckets = reports[0].buckets
    if any(report.buckets != buckets for report in reports):
        raise ValueError("the systems were scored on different length buckets")
    header = ["source words", "sentences"] + [f"{r.name} {score.name}" for r in reports for score in r.overall]
    rows = [[bucket.label, str(len(bucket.indices))]
            + [f"{score.value:.2f}" for r in reports for score in r.bucket_scores[index]]
            for index, bucket in enumerate(buckets)]
    rows.append(["all", str(sum(len(bucket.indices) for bucket in buckets))]
                + [f"{score.value:.2f}" for r in reports for score in r.overall])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines += [f"{score.name}: {score.signature}" for score in reports[0].overall]
    return "\n".join(lines)
