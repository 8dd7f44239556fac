"""Building a model's vocabulary shortlist (attnmt.model.shortlist) from parallel text:
``attnmt shortlist MODEL --src train.en --trg train.de``.

For each source piece, the ``k`` target pieces that best go with it, by one of two tables built from
the same sentence pairs (encoded with the model's tokenizers):

- ``alignment``: the model's own alignments. Each pair is force-decoded and each target piece linked
  to the source piece it attends to most; p(t | s) = links(s, t) / links(s), a lexical translation
  table such as Marian and CTranslate2 take from an external aligner, read off attention instead;
- ``cooccurrence``: pieces that occur in the same sentence pairs, ranked by the Dice coefficient
  2 c(s, t) / (c(s) + c(t)), which needs no model.

Plus the ``frequent`` most frequent target pieces, allowed in every batch. Counts are kept for the
(source, target) pairs that occur only, so memory grows with what the text holds, not with the
product of the vocabularies.
"""

from __future__ import annotations

from typing import Callable, Iterable, Literal

import numpy as np
import torch

from attnmt.data.corpus import chunks
from attnmt.data.text import clean_line
from attnmt.forced_decoding import forced_decode
from attnmt.translator import Translator

Method = Literal["alignment", "cooccurrence"]
CHUNK_PAIRS = 4096


class SparseCounts:
    """Counts of (source id, target id) pairs, kept as sorted keys s * trg_vocab + t and their counts."""

    def __init__(self, trg_vocab: int) -> None:
        self.trg_vocab = trg_vocab
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.float64)

    def add(self, sources: np.ndarray, targets: np.ndarray) -> None:
        """Count each (sources[i], targets[i]) once more."""
        keys = np.concatenate([self.keys, sources.astype(np.int64) * self.trg_vocab + targets])
        weights = np.concatenate([self.counts, np.ones(len(sources))])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse, weights=weights)

    @property
    def sources(self) -> np.ndarray:
        return self.keys // self.trg_vocab

    @property
    def targets(self) -> np.ndarray:
        return self.keys % self.trg_vocab


def build_shortlist(translator: Translator, pairs: Iterable[tuple[str, str]], k: int = 50, frequent: int = 100,
                    method: Method = "alignment", log: Callable[[str], None] = print) -> tuple[torch.Tensor, torch.Tensor]:
    """(lists (src_vocab, k) target ids, -1 padded; frequent (m,) target ids) from the given pairs."""
    src_vocab, trg_vocab = translator.src_tokenizer.vocab_size, translator.trg_tokenizer.vocab_size
    counts = SparseCounts(trg_vocab)  # links or co-occurrences
    src_counts, trg_counts = np.zeros(src_vocab), np.zeros(trg_vocab)  # sentence pairs each piece occurs in
    target_frequency = np.zeros(trg_vocab)
    read = 0
    for chunk in chunks(pairs, CHUNK_PAIRS):
        src_ids = translator.src_tokenizer.encode_batch([clean_line(s) for s, _ in chunk])
        trg_ids = translator.trg_tokenizer.encode_batch([clean_line(t) for _, t in chunk])
        usable = [(s, t) for s, t in zip(src_ids, trg_ids) if s and t]
        for _, trg in usable:
            np.add.at(target_frequency, trg, 1)
        if method == "alignment":
            counts.add(*_links(translator, usable))
        elif usable:
            sets = [(np.unique(src), np.unique(trg)) for src, trg in usable]
            for src_set, trg_set in sets:
                src_counts[src_set] += 1
                trg_counts[trg_set] += 1
            counts.add(np.concatenate([np.repeat(s, len(t)) for s, t in sets]),
                       np.concatenate([np.tile(t, len(s)) for s, t in sets]))
        read += len(chunk)
        log(f"shortlist: {read} pairs read")
    sources, targets = counts.sources, counts.targets
    if method == "alignment":  # p(t | s)
        scores = counts.counts / np.bincount(sources, weights=counts.counts, minlength=src_vocab)[sources]
    else:  # Dice
        scores = 2 * counts.counts / (src_counts[sources] + trg_counts[targets])
    order = np.lexsort((-scores, sources))  # by source, best first
    sources, targets = sources[order], targets[order]
    first = np.searchsorted(sources, sources)  # where each source's run begins
    rank = np.arange(len(sources)) - first
    lists = np.full((src_vocab, k), -1, dtype=np.int64)
    kept = rank < k
    lists[sources[kept], rank[kept]] = targets[kept]
    common = np.argsort(-target_frequency, kind="stable")[:frequent]
    return torch.from_numpy(lists), torch.from_numpy(common[target_frequency[common] > 0])


def _links(translator: Translator, pairs: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """The model's piece links of force-decoded ``pairs``: (source ids, target ids), one entry per
    target piece, linked to the source piece it attends to most."""
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    forced = forced_decode(translator.model, [s for s, _ in pairs], [t for _, t in pairs],
                           translator.config.decode.batch_size, translator.device, need_attention=True)
    sources, targets = [], []
    for (src, trg), result in zip(pairs, forced):
        attention = result.attention[: len(trg), : len(src)]  # target pieces x source pieces, </s> left out
        sources.append(np.asarray(src)[attention.argmax(axis=1)])  # (len(trg),) each target piece's source piece
        targets.append(np.asarray(trg))
    return np.concatenate(sources), np.concatenate(targets)
