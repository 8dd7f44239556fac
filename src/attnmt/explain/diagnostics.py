"""Warnings from attention about one translation: which source words the output never looked at
(possible omissions), which it looked at far more than once (possible repetition or
over-translation), and how spread or how idle (on the source ``</s>``) each target word's attention was.

All of it is read off the word-level attention matrix (``explain.alignment.word_attention``: a source
word's pieces summed, a target word's pieces averaged), one row per target word and one column per
source word, ``</s>`` last on both sides:

    coverage[j]  the attention mass source word j received from all target words (the ``</s>`` row
                 left out): about 1 for a word translated once, 0 for a word no target word looked at
    entropy[i]   the entropy, in nats, of target word i's attention (source words and ``</s>``): 0 when
                 it looks at one word, log(n + 1) when it looks at all of them alike
    eos_mass[i]  the attention target word i gave the source ``</s>``, the NULL word: high for words
                 with no source counterpart, and for output that looks at nothing

A source word is flagged as a possible omission when its coverage is below ``OMISSION_BELOW``, as
over-attended when it is above ``REPETITION_ABOVE``.

Attention alone is a weak witness of omissions (a decoder looks at the word it is about to translate
whether or not it then translates it), so a second, costlier check asks the model itself: the
**deletion test** (contrastive conditioning, Vamvas and Sennrich 2022). The translation is scored
again with each source word left out of the source in turn:

    deletion_gain[j] = log P(translation | source without word j) − log P(translation | source)

summed over the translation's tokens, in nats. A translation that renders word j needs it: leaving
it out makes the translation less probable (a negative gain). A translation that left word j out is
no less probable without it, often much more: a gain above ``UNTRANSLATED_ABOVE`` (3 nats, twenty
times as probable: the best F1 on Multi30k val) flags j as ``untranslated``. The gains come from the
model (``Translator.diagnose``); here they are only read.

docs/attention.md measures what each flag is worth on Multi30k (benchmarks/diagnostics.py) and how
the defaults were chosen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from attnmt.explain.alignment import AttendedTranslation, word_attention

OMISSION_BELOW = 0.25  # coverage under which a source word counts as possibly untranslated
REPETITION_ABOVE = 2.0  # coverage above which a source word counts as possibly translated more than once
UNTRANSLATED_ABOVE = 3.0  # deletion gain (nats) above which a source word counts as untranslated


@dataclass
class Diagnostics:
    """What attention says about one translation (see the module docstring)."""

    src_words: list[str]
    trg_words: list[str]
    coverage: list[float]  # per source word
    entropy: list[float]  # per target word
    eos_mass: list[float]  # per target word
    omitted: list[int] = field(default_factory=list)  # source words with coverage < omission_below
    over_attended: list[int] = field(default_factory=list)  # source words with coverage > repetition_above
    omission_below: float = OMISSION_BELOW
    repetition_above: float = REPETITION_ABOVE
    deletion_gain: list[float] | None = None  # per source word; None: the deletion test was not run
    untranslated: list[int] = field(default_factory=list)  # source words with deletion_gain > untranslated_above
    untranslated_above: float = UNTRANSLATED_ABOVE

    @property
    def flagged(self) -> bool:
        """Whether any source word looks omitted, over-attended or (by the deletion test) untranslated."""
        return bool(self.omitted or self.over_attended or self.untranslated)

    @property
    def mean_entropy(self) -> float:
        return float(np.mean(self.entropy)) if self.entropy else 0.0

    @property
    def mean_eos_mass(self) -> float:
        return float(np.mean(self.eos_mass)) if self.eos_mass else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, rounded to 4 decimals, with the summary figures."""
        plain = asdict(self)
        for key in ("coverage", "entropy", "eos_mass", "deletion_gain"):
            plain[key] = None if plain[key] is None else [round(value, 4) for value in plain[key]]
        plain.update(flagged=self.flagged, mean_entropy=round(self.mean_entropy, 4),
                     mean_eos_mass=round(self.mean_eos_mass, 4))
        return plain


def diagnose(translation: AttendedTranslation, omission_below: float = OMISSION_BELOW,
             repetition_above: float = REPETITION_ABOVE) -> Diagnostics:
    """The diagnostics of a translation with attention (NoAttentionError otherwise). An empty input
    gives empty lists and no flags (an empty output of a non-empty input leaves every source word
    unattended: each is flagged)."""
    if translation.attention is not None and translation.attention.size == 0:
        return Diagnostics([], [], [], [], [], omission_below=omission_below, repetition_above=repetition_above)
    words, src_labels, trg_labels = word_attention(translation)  # (trg_words + 1, src_words + 1)
    return diagnose_matrix(words, src_labels[:-1], trg_labels[:-1], omission_below, repetition_above)


def diagnose_matrix(attention: np.ndarray, src_words: list[str], trg_words: list[str],
                    omission_below: float = OMISSION_BELOW, repetition_above: float = REPETITION_ABOVE) -> Diagnostics:
    """Diagnostics of a word-level attention matrix (len(trg_words) + 1, len(src_words) + 1), the
    ``</s>`` row and column last, rows summing to 1."""
    attention = np.asarray(attention, dtype=np.float64)
    expected = (len(trg_words) + 1, len(src_words) + 1)
    if attention.shape != expected:
        raise ValueError(f"attention has shape {attention.shape}, the words give {expected} (with </s>)")
    rows = attention[:-1]  # (trg_words, src_words + 1): the </s> row left out
    coverage = rows[:, :-1].sum(axis=0) if len(trg_words) else np.zeros(len(src_words))  # (src_words,)
    entropy = [_entropy(row) for row in rows]
    omitted = [j for j, mass in enumerate(coverage) if mass < omission_below]
    over = [j for j, mass in enumerate(coverage) if mass > repetition_above]
    return Diagnostics(list(src_words), list(trg_words), coverage.tolist(), entropy, rows[:, -1].tolist(), omitted,
                       over, omission_below, repetition_above)


def with_deletion_test(diagnostics: Diagnostics, deletion_gain: Sequence[float],
                       untranslated_above: float = UNTRANSLATED_ABOVE) -> Diagnostics:
    """The diagnostics with the deletion test's gains (one per source word, see the module docstring)
    and the words they flag as untranslated."""
    if len(deletion_gain) != len(diagnostics.src_words):
        raise ValueError(f"{len(deletion_gain)} deletion gains for {len(diagnostics.src_words)} source words")
    gains = [float(gain) for gain in deletion_gain]
    return replace(diagnostics, deletion_gain=gains, untranslated_above=untranslated_above,
                   untranslated=[j for j, gain in enumerate(gains) if gain > untranslated_above])


def deletion_variants(words: Sequence[Sequence[int]]) -> list[list[int]]:
    """The source with each word left out in turn, each variant one flat sequence of piece ids
    (``words`` holds each word's pieces)."""
    return [[piece for i, word in enumerate(words) if i != j for piece in word] for j in range(len(words))]


def _entropy(row: np.ndarray) -> float:
    """Entropy in nats of a row of weights (normalised first: merged rows sum to 1 up to rounding)."""
    total = row.sum()
    if total <= 0:
        return 0.0
    p = row[row > 0] / total
    return max(0.0, float(-(p * np.log(p)).sum()))  # max: never -0.0
