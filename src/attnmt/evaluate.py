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
