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
no less probable without it, often much more.

Where a translation skips a word, it also goes against the model: the token after the gap is far
less probable than the model's own first choice there, and that step's attention rests on the
skipped word, the one the decoder was about to translate. The regret of a step is log P(the model's
first choice) − log P(the token written), ≥ 0, and

    attended_regret[j] = Σ_i attention[i, j] · regret[i]

over the target words i (a word's pieces averaged, as in ``coverage``) and the final ``</s>`` (a
skipped last word shows as an early end). A source word's **untranslated score** is
deletion_gain[j] + attended_regret[j]; the word with the largest score is flagged ``untranslated``
when its score is above ``UNTRANSLATED_ABOVE`` (1 nat: the best F1 on Multi30k val, at most one word
a translation, which is what made the flag precise). For the model's own greedy translation every
regret is 0 (each token is its first choice) and the score is the deletion gain; beam search's are
small. The regret speaks for given translations: a human's, another system's, a reference with a
gap. The gains and regrets come from the model (``Translator.diagnose``, ``diagnose_pairs``); here
they are only read.

docs/attention.md measures what each flag is worth on Multi30k (benchmarks/diagnostics.py) and how
the defaults were chosen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from attnmt.explain.alignment import AttendedTranslation, merge_groups, word_attention

OMISSION_BELOW = 0.25  # coverage under which a source word counts as possibly untranslated
REPETITION_ABOVE = 2.0  # coverage above which a source word counts as possibly translated more than once
UNTRANSLATED_ABOVE = 1.0  # untranslated score (nats) above which the highest-scoring source word counts as untranslated


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
    attended_regret: list[float] | None = None  # per source word; None: the deletion test was not run
    untranslated: list[int] = field(default_factory=list)  # the word with the largest untranslated_score, if above
    untranslated_above: float = UNTRANSLATED_ABOVE

    @property
    def untranslated_score(self) -> list[float] | None:
        """Per source word, deletion_gain + attended_regret (nats); None unless the deletion test ran."""
        if self.deletion_gain is None or self.attended_regret is None:
            return None
        return [gain + regret for gain, regret in zip(self.deletion_gain, self.attended_regret)]

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
        plain["untranslated_score"] = self.untranslated_score
        for key in ("coverage", "entropy", "eos_mass", "deletion_gain", "attended_regret", "untranslated_score"):
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


def with_deletion_test(diagnostics: Diagnostics, deletion_gain: Sequence[float], attended_regret: Sequence[float],
                       untranslated_above: float = UNTRANSLATED_ABOVE) -> Diagnostics:
    """The diagnostics with the deletion test's gains and the attended regrets (one each per source
    word, see the module docstring) and the word they flag as untranslated, if any."""
    for name, values in (("deletion gains", deletion_gain), ("attended regrets", attended_regret)):
        if len(values) != len(diagnostics.src_words):
            raise ValueError(f"{len(values)} {name} for {len(diagnostics.src_words)} source words")
    tested = replace(diagnostics, deletion_gain=[float(gain) for gain in deletion_gain],
                     attended_regret=[float(regret) for regret in attended_regret], untranslated_above=untranslated_above)
    scores = tested.untranslated_score or []
    best = int(np.argmax(scores)) if scores else None
    return replace(tested, untranslated=[best] if best is not None and scores[best] > untranslated_above else [])


def attended_regret(attention: np.ndarray, regret: np.ndarray, src_groups: Sequence[Sequence[int]],
                    trg_groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(src words,) Σ over target words and </s> of the attention each source word received times the
    step's regret (module docstring). ``attention`` (trg pieces + 1, src pieces + 1) and ``regret``
    (trg pieces + 1,) are a forced decoding's, ``</s>`` last; the groups hold each word's piece
    indices, the ``</s>`` group last on both sides."""
    weighted = np.asarray(attention, dtype=np.float64) * np.asarray(regret, dtype=np.float64)[:, None]
    by_words = merge_groups(weighted, src_groups, trg_groups)  # (trg words + 1, src words + 1)
    return by_words[:, :-1].sum(axis=0)  # the source </s> left out


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
