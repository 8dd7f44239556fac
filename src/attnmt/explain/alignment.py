"""Word alignments from attention, and how good they are.

Attention over subword pieces becomes attention over words: the columns of a source word's pieces
are summed (the mass the word received), the rows of a target word's pieces averaged (rows that
summed to 1 still do). Each target word is then aligned to the source word it attends to most; one
that attends most to the source ``</s>`` stays unaligned, ``</s>`` playing the NULL word of the IBM
models. Links are written in the Pharaoh format of Moses and fast_align: ``i-j`` links source word i
to target word j, both counted from 0, words being the whitespace-separated tokens of the text.

Gold alignments tell sure links (S) from possible ones (P, which includes S). The alignment error
rate (Och and Ney, 2003) of links A is ``AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|)``, precision is
``|A∩P| / |A|`` and recall ``|A∩S| / |S|``, each summed over the corpus before dividing.

numpy only: no torch, no matplotlib (``align --hyp`` and ``evaluate`` run without them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from attnmt.data.alignments import GoldAlignment, Link, format_links
from attnmt.data.vocab import EOS_PIECE, WORD_START
from attnmt.errors import AlignmentError, NoAttentionError

if TYPE_CHECKING:
    import torch
# Pieces that are words of their own: </s>, <unk>, <pad>, ... but not the byte pieces <0xE2> of
# byte fallback, which spell part of a word.
_SPECIAL_TOKEN = re.compile(r"^<(?!0x[0-9A-Fa-f]{2}>)[^<>\s]+>$")



def as_matrix(attention: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a 2-D numpy array or torch tensor."""
    if hasattr(attention, "detach"):  # a torch.Tensor; checked by duck typing to avoid importing torch
        attention = attention.detach().cpu().float().numpy()
    matrix = np.asarray(attention, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"attention must be 2-D (trg_len, src_len), got shape {matrix.shape}")
    return matrix


def check_shape(matrix: np.ndarray, src_tokens: Sequence[str], trg_tokens: Sequence[str]) -> None:
    expected = (len(trg_tokens), len(src_tokens))
    if matrix.shape != expected:
        raise ValueError(
            f"attention has shape {matrix.shape} (trg_len, src_len) but the tokens give "
            f"{expected}: {len(trg_tokens)} target and {len(src_tokens)} source tokens"
        )


def group_words(pieces: Sequence[str]) -> list[list[int]]:
    """Indices of the pieces in each word: "▁" opens a word; special tokens are words of their own."""
    words: list[list[int]] = []
    previous_special = True  # the first piece always opens a word
    for index, piece in enumerate(pieces):
        special = bool(_SPECIAL_TOKEN.match(piece))
        if special or previous_special or piece.startswith(WORD_START):
            words.append([index])
        else:
            words[-1].append(index)
        previous_special = special
    return words


def _word_label(pieces: Sequence[str]) -> str:
    return "".join(pieces).replace(WORD_START, "") or WORD_START


def merge_groups(matrix: np.ndarray, src_groups: Sequence[Sequence[int]], trg_groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(trg_pieces, src_pieces) -> (len(trg_groups), len(src_groups)): the columns of each source
    group summed, the rows of each target group averaged. A group holds piece indices."""
    sum_sources = np.zeros((matrix.shape[1], len(src_groups)))  # (src_pieces, src_words)
    for word_index, piece_indices in enumerate(src_groups):
        sum_sources[list(piece_indices), word_index] = 1.0
    average_targets = np.zeros((len(trg_groups), matrix.shape[0]))  # (trg_words, trg_pieces)
    for word_index, piece_indices in enumerate(trg_groups):
        if piece_indices:
            average_targets[word_index, list(piece_indices)] = 1.0 / len(piece_indices)
    return average_targets @ matrix @ sum_sources  # (trg_words, src_words)


def merge_subwords(
    attention: np.ndarray | torch.Tensor, src_pieces: list[str], trg_pieces: list[str], merge_target: bool = True
) -> tuple[np.ndarray, list[str], list[str]]:
    """Word-level attention from SentencePiece-level attention, words found by their "▁".

    Returns (attention_words, src_words, trg_words), labels without "▁". ``merge_target=False`` keeps
    one row per target piece (e.g. characters of an output with no spaces).
    """
    matrix = as_matrix(attention)  # (trg_pieces, src_pieces)
    check_shape(matrix, src_pieces, trg_pieces)
    src_words = group_words(src_pieces)
    trg_words = group_words(trg_pieces) if merge_target else [[i] for i in range(len(trg_pieces))]
    src_labels = [_word_label([src_pieces[i] for i in word]) for word in src_words]
    trg_labels = [_word_label([trg_pieces[i] for i in word]) for word in trg_words]
    return merge_groups(matrix, src_words, trg_words), src_labels, trg_labels


class AttendedTranslation(Protocol):
    """What ``word_attention`` reads of a translation (attnmt.translator.Translation is one)."""

    attention: np.ndarray | None  # (len(tokens)+1, len(src_tokens)+1)

    @property
    def attention_labels(self) -> tuple[list[str], list[str]]:
        """(source pieces, target pieces), ``</s>`` included."""
        ...


def word_attention(translation: AttendedTranslation, words: bool = True, merge_target: bool = True,
                   ) -> tuple[np.ndarray, list[str], list[str]]:
    """A translation's attention matrix with its labels, ``</s>`` included: (matrix, source labels,
    target labels). ``words``: pieces merged into words (``merge_subwords``; ``merge_target=False``
    keeps one row per target piece); else the pieces as the search saw them. Raises
    NoAttentionError for a translation of a model without attention."""
    if translation.attention is None:
        raise NoAttentionError("this translation comes from a model without attention (model.attention: none)")
    src_labels, trg_labels = translation.attention_labels
    if not words:
        return as_matrix(translation.attention), src_labels, trg_labels
    return merge_subwords(translation.attention, src_labels, trg_labels, merge_target=merge_target)


def attention_links(word_attention: np.ndarray, both_ways: bool = False) -> list[Link]:
    """Links from word attention (trg_words + 1, src_words + 1), the last row and column ``</s>``:
    each target word to the source word it attends to most, none if that is ``</s>`` (or if the word
    has no attention at all: a "word" of invisible characters that the tokenizer drops).
    ``both_ways``: only the links where the source word, too, is attended to most by that target word
    (the intersection of the two directions' argmax: fewer links, more precise)."""
    src_eos = word_attention.shape[1] - 1
    links = []
    for target, row in enumerate(word_attention[:-1]):
        source = int(np.argmax(row))
        if source != src_eos and row[source] > 0:
            links.append((source, target))
    if both_ways and len(word_attention) > 1:
        best_target = np.argmax(word_attention[:-1, :-1], axis=0)  # (src_words,) over the target words
        links = [(source, target) for source, target in links if best_target[source] == target]
    return links


def deletion_links(effects: np.ndarray, trg_groups: Sequence[Sequence[int]], both_ways: bool = False,
                   attention: np.ndarray | None = None) -> list[Link]:
    """Links from the deletion test's effects (trg_pieces + 1, src_words): how much each target piece's
    log-probability (``</s>`` last) changes when each source word is left out of the source. Each
    target piece is linked to the source word whose deletion lowers its log-probability most, if any
    lowers it (Li et al. 2019's prediction difference, in log-probabilities), and a target word to
    the source words any of its pieces are linked to. ``attention`` (trg_pieces + 1, src_words + 1),
    ``</s>`` row and column last: each drop is weighted by the attention the piece gave the word, so
    that a link needs both the model's look and its need. ``both_ways``: only the links where that
    target piece is also the one the source word matters most to."""
    scores = link_scores(effects, attention)  # (trg_pieces, src_words)
    if scores.size == 0:
        return []
    best_source = scores.argmax(axis=1)  # (trg_pieces,)
    best_piece = scores.argmax(axis=0)  # (src_words,)
    word_of_piece = {piece: word for word, pieces in enumerate(trg_groups) for piece in pieces}
    links = {(int(source), word_of_piece[piece]) for piece, source in enumerate(best_source)
             if scores[piece, source] > 0 and (not both_ways or best_piece[source] == piece)}
    return sorted(links, key=lambda link: (link[1], link[0]))


def link_scores(effects: np.ndarray | None, attention: np.ndarray | None) -> np.ndarray:
    """(trg_pieces, src_words) scores for linking each target piece to each source word, ``</s>`` rows
    and columns dropped: the drop in the piece's log-probability when the word is left out of the source
    (``effects``, (trg_pieces + 1, src_words), ``</s>`` row last; rises count as 0), times the attention
    the piece gave the word (``attention``, (trg_pieces + 1, src_words + 1)); either alone if the other
    is None."""
    if effects is None and attention is None:
        raise ValueError("link scores need the deletion test's effects, the attention, or both")
    scores = None if effects is None else np.maximum(-np.asarray(effects, dtype=np.float64)[:-1], 0.0)
    if attention is not None:
        looks = np.asarray(attention, dtype=np.float64)[:-1, :-1]
        scores = looks if scores is None else scores * looks
    return scores


def word_link_scores(scores: np.ndarray, trg_groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(trg_pieces, src_words) -> (len(trg_groups), src_words): each target word takes its pieces'
    largest score (as a word is linked wherever any of its pieces is)."""
    rows = [scores[list(pieces)].max(axis=0) if pieces else np.zeros(scores.shape[1]) for pieces in trg_groups]
    return np.stack(rows) if rows else np.zeros((0, scores.shape[1]))


def mean_link_scores(per_model: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of several models' word link scores for one pair, each (trg_words, src_words): models of
    one direction combined word by word, so that their vocabularies (and their pieces) may differ."""
    if not per_model:
        raise ValueError("no models' word link scores to average")
    shapes = {np.shape(scores) for scores in per_model}
    if len(shapes) != 1:
        raise ValueError(f"the models' word link scores do not fit: shapes {sorted(shapes)} (trg_words, src_words); "
                         "they must cut the pair into the same words")
    return np.mean(np.stack(per_model), axis=0)


def two_way_links(forward: np.ndarray, backward: np.ndarray, both_ways: bool = True) -> list[Link]:
    """Links from two models of opposite directions, as statistical aligners symmetrise theirs:
    ``forward`` (trg_words, src_words), the source→target model's word link scores; ``backward``
    (src_words, trg_words), the target→source model's on the same pair turned round. Their product
    scores each pair of words by both models at once; each target word is linked to the source word
    with the largest product (if above 0); ``both_ways``: only where that target word is also the one
    with the largest product for the source word."""
    if forward.shape != backward.T.shape:
        raise ValueError(f"the two directions' scores do not fit: {forward.shape} (trg, src) against "
                         f"{backward.shape} (src, trg)")
    product = forward * backward.T  # (trg_words, src_words)
    if product.size == 0:
        return []
    best_source = product.argmax(axis=1)  # (trg_words,)
    best_target = product.argmax(axis=0)  # (src_words,)
    return [(int(source), target) for target, source in enumerate(best_source)
            if product[target, source] > 0 and (not both_ways or best_target[source] == target)]


@dataclass
class WordAlignment:
    """One sentence pair aligned word by word, with the word-level attention the links come from."""

    src_words: list[str]
    trg_words: list[str]
    attention: np.ndarray  # (len(trg_words) + 1, len(src_words) + 1), </s> row and column last; rows sum to 1
    links: list[Link]  # (source word, target word), from 0, in target order

    @classmethod
    def from_attention(cls, attention: np.ndarray, src_words: list[str], trg_words: list[str],
                       both_ways: bool = False) -> "WordAlignment":
        return cls(src_words, trg_words, attention, attention_links(attention, both_ways))

    @property
    def attention_labels(self) -> tuple[list[str], list[str]]:
        """(source labels, target labels) of ``attention``, ``</s>`` included."""
        return self.src_words + [EOS_PIECE], self.trg_words + [EOS_PIECE]

    def pharaoh(self) -> str:
        """The links as one line of the Pharaoh format: ``0-0 1-2 2-1``."""
        return format_links(self.links)


@dataclass(frozen=True)
class AlignmentScore:
    """Corpus-level alignment quality, in 0..1 (nan where a denominator is 0)."""

    aer: float
    precision: float
    recall: float
    sentences: int
    links: int  # |A|
    sure: int  # |S|
    possible: int  # |P|

    def __str__(self) -> str:
        return (f"AER = {_percent(self.aer)}  precision = {_percent(self.precision)}  recall = {_percent(self.recall)}"
                f"  ({self.sentences} sentences, {self.links} links; gold {self.sure} sure, {self.possible} possible)")


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}%"


def alignment_error_rate(hypotheses: Sequence[Sequence[Link]], gold: Sequence[GoldAlignment]) -> AlignmentScore:
    """AER, precision and recall of predicted links against gold links, summed over sentences."""
    if len(hypotheses) != len(gold):
        raise AlignmentError(f"{len(hypotheses)} predicted alignments but {len(gold)} gold alignments: "
                             "they must pair up line by line")
    predicted = hit_sure = hit_possible = sure = possible = 0
    for links, reference in zip(hypotheses, gold):
        links = set(links)
        predicted += len(links)
        sure += len(reference.sure)
        possible += len(reference.possible)
        hit_sure += len(links & reference.sure)
        hit_possible += len(links & reference.possible)
    return AlignmentScore(
        aer=_ratio(hit_sure + hit_possible, predicted + sure, complement=True),
        precision=_ratio(hit_possible, predicted),
        recall=_ratio(hit_sure, sure),
        sentences=len(gold),
        links=predicted,
        sure=sure,
        possible=possible,
    )


def _ratio(numerator: int, denominator: int, complement: bool = False) -> float:
    if denominator == 0:
        return math.nan
    return 1 - numerator / denominator if complement else numerator / denominator


def check_gold_fits(gold: Sequence[GoldAlignment], src_words: Sequence[int], trg_words: Sequence[int], path: str) -> None:
    """Every gold link must point at a word of its sentence pair (``src_words``, ``trg_words``: word
    counts): otherwise the gold file is 1-based, reversed or tokenized differently from the text."""
    if len(gold) != len(src_words):
        raise AlignmentError(f"{path} has {len(gold)} lines but there are {len(src_words)} sentence pairs")
    for number, (reference, n_src, n_trg) in enumerate(zip(gold, src_words, trg_words), 1):
        largest_src, largest_trg = reference.largest_indices
        for side, largest, count in (("source", largest_src, n_src), ("target", largest_trg, n_trg)):
            if largest >= count:
                raise AlignmentError(
                    f"{path}, line {number}: a link points at {side} word {largest}, but the pair has {count} "
                    f"{side} words (indices count from 0, source first); is the file 1-based, reversed, or "
                    "tokenized differently from the text?"
                )
