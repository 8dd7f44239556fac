"""Batches: which examples go together (by length, to waste little padding) and their tensors.

Public API:
    Batch                                   padded tensors of one batch (see its fields)
    collate(src_ids, trg_ids, indices) -> Batch
    source_arrays(src_ids) -> (src, src_lengths)   the source side alone, as numpy arrays (for search)
    token_batches(src_lengths, trg_lengths, max_tokens, shuffle, seed, epoch, pool_factor=100) -> list[np.ndarray]
    sentence_batches(lengths, max_sentences) -> list[list[int]]

Lengths given to the batching functions are token counts without BOS/EOS; each side gains one
token (EOS on the source and target output, BOS on the target input) when collated.

torch is imported only where tensors are made (``collate``, ``alignment_targets``): the batching of
sentences for search serves models that run without it (attnmt.export).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """One batch of examples, padded with PAD_ID on the right.

    ``src`` rows are ``ids + [EOS]``; ``trg_input`` rows are ``[BOS] + ids`` and ``trg_output`` rows
    ``ids + [EOS]`` (the decoder reads ``trg_input[:, t]`` and predicts ``trg_output[:, t]``).
    The target fields are None for batches that are only translated.
    """

    src: torch.Tensor  # (batch, src_len) long
    src_lengths: torch.Tensor  # (batch,) long, EOS included
    trg_input: torch.Tensor | None  # (batch, trg_len) long
    trg_output: torch.Tensor | None  # (batch, trg_len) long
    indices: list[int]  # position of each example in the dataset
    n_trg_tokens: int  # non-pad tokens of trg_output (EOS included); 0 without a target
    alignment: torch.Tensor | None = None  # (batch, trg_len, src_len) float: guided alignment targets, each
    # aligned target position's row summing to 1 over the source pieces it is linked to, other rows 0

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> "Batch":
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device, non_blocking=True)

        return Batch(
            move(self.src), move(self.src_lengths), move(self.trg_input), move(self.trg_output),
            self.indices, self.n_trg_tokens, move(self.alignment),
        )


def _pad(rows: list[list[int]]) -> np.ndarray:
    """(len(rows), longest row) int64, PAD_ID on the right."""
    width = max(len(row) for row in rows)
    return np.array([row + [PAD_ID] * (width - len(row)) for row in rows], dtype=np.int64)


def source_arrays(src_ids: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The source side of a batch as ``collate`` makes it, in numpy: rows ``ids + [EOS]`` padded,
    (batch, src_len) int64, and their lengths (batch,) int64, EOS included."""
    if not src_ids:
        raise ValueError("cannot collate an empty batch")
    src = _pad([list(ids) + [EOS_ID] for ids in src_ids])  # (batch, src_len)
    return src, np.array([len(ids) + 1 for ids in src_ids], dtype=np.int64)


def collate(
    src_ids: Sequence[list[int]], trg_ids: Sequence[list[int]] | None, indices: Sequence[int],
    links: Sequence[np.ndarray] | None = None,
) -> Batch:
    """Pad token ids (without BOS/EOS) into a Batch; ``indices`` are the examples' dataset positions.
    ``links``: each example's (source piece, target piece) links, for guided alignment targets."""
    import torch

    if not src_ids:
        raise ValueError("cannot collate an empty batch")
    if len(indices) != len(src_ids) or (trg_ids is not None and len(trg_ids) != len(src_ids)):
        raise ValueError(
            f"collate got {len(src_ids)} sources, {len(indices)} indices and "
            f"{'no' if trg_ids is None else len(trg_ids)} targets"
        )
    src, src_lengths = map(torch.from_numpy, source_arrays(src_ids))  # (batch, src_len), (batch,)
    trg_input = trg_output = None
    n_trg_tokens = 0
    if trg_ids is not None:
        trg_input = torch.from_numpy(_pad([[BOS_ID] + list(ids) for ids in trg_ids]))  # (batch, trg_len)
        trg_output = torch.from_numpy(_pad([list(ids) + [EOS_ID] for ids in trg_ids]))  # (batch, trg_len)
        n_trg_tokens = sum(len(ids) + 1 for ids in trg_ids)
    alignment = None
    if links is not None and trg_input is not None:
        alignment = alignment_targets(links, trg_input.size(1), src.size(1))
    return Batch(src, src_lengths, trg_input, trg_output, [int(i) for i in indices], n_trg_tokens, alignment)


def alignment_targets(links: Sequence[np.ndarray], trg_len: int, src_len: int) -> torch.Tensor:
    """(batch, trg_len, src_len): for each target piece with links, the uniform distribution over the
    source pieces it is linked to. Row t is the decoder step that writes target piece t (its attention
    is computed from the state that emits it), so the link (s, t) sets row t."""
    import torch

    targets = torch.zeros(len(links), trg_len, src_len)
    for row, pair in enumerate(links):
        if len(pair):
            pair = torch.as_tensor(np.asarray(pair, dtype=np.int64))  # (links, 2)
            targets[row, pair[:, 1], pair[:, 0]] = 1.0
    return targets / targets.sum(dim=2, keepdim=True).clamp(min=1.0)


def token_batches(
    src_lengths: Sequence[int] | np.ndarray,
    trg_lengths: Sequence[int] | np.ndarray,
    max_tokens: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    pool_factor: int = 100,
) -> list[np.ndarray]:
    """Group examples into batches of similar lengths that fit a token budget: arrays of example
    indices.

    A batch of n examples costs ``n * max(longest source, longest target)``, lengths counted with
    their EOS/BOS; it is at most ``max_tokens`` unless a single example is longer on its own.
    With ``shuffle``, examples are shuffled, sorted by length (the longer side, then source, then
    target) within pools of about ``pool_factor`` batches, cut greedily into batches, and the
    batches shuffled. Sorting by both sides keeps padding low on both (about 5% each on Multi30k
    at 2000 tokens); a pool gives each epoch different batches. The result depends only on
    (seed, epoch), so training can resume at a batch position. Without it, the whole set is sorted
    and batches come shortest first. numpy throughout: memory is a few bytes per example, so that
    an epoch of ten million pairs is cut in seconds.
    """
    if len(src_lengths) != len(trg_lengths):
        raise ValueError(f"{len(src_lengths)} source lengths but {len(trg_lengths)} target lengths")
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    src = np.asarray(src_lengths, dtype=np.int32) + 1
    trg = np.asarray(trg_lengths, dtype=np.int32) + 1
    if len(src) == 0:
        return []
    longest = np.maximum(src, trg)
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    order = rng.permutation(len(src)) if rng is not None else np.arange(len(src))
    pool_size = len(order)
    if rng is not None:  # a batch holds about max_tokens / mean(longest) examples
        pool_size = max(1, int(pool_factor * max_tokens / float(longest.mean())))
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        # by the longer side (what the budget counts), then source, then target length; the sort is
        # stable, so equal lengths keep the shuffled order
        pool = pool[np.lexsort((trg[pool], src[pool], longest[pool]))]
        batches.extend(pool[begin:end] for begin, end in _cut(longest[pool], max_tokens))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _cut(lengths: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """Cut examples sorted by ascending (longest) length greedily into batches within the token
    budget: (start, end) of each. Example j joins the batch that starts at i while
    (j - i + 1) * lengths[j] fits, lengths[j] being the batch's longest so far; that cost grows
    with j, so each batch's end is one binary search."""
    spans, start, n = [], 0, len(lengths)
    while start < n:
        window = lengths[start : start + max_tokens + 1]  # no batch holds more than max_tokens examples
        costs = np.arange(1, len(window) + 1) * window  # (window,), non-decreasing
        end = start + max(1, int(np.searchsorted(costs, max_tokens, side="right")))
        spans.append((start, end))
        start = end
    return spans


def sentence_batches(lengths: Sequence[int], max_sentences: int) -> list[list[int]]:
    """Batches of at most ``max_sentences`` indices, longest sentences first (little padding,
    and the largest memory need shows up at once). Callers put the results back in input order."""
    if max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + max_sentences] for start in range(0, len(order), max_sentences)]
