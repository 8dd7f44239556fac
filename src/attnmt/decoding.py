"""Decoding many tokenized sentences: search in length-sorted batches (``decode_ids``) and inputs too
long for the model cut into pieces and joined again (``decode_long_inputs``). Forced decoding of
given translations is attnmt.forced_decoding.

Training validation and the translators (PyTorch and ONNX) decode through here; everything is token
ids in and hypotheses out, no text. Nothing here imports torch: a model's arrays are made by the
``as_input`` its caller passes (``attnmt.runtime.tensors_on(device)`` for a PyTorch model).

Long inputs. A model trained on sentences of at most ``data.max_src_tokens`` tokens translates a
10,000-token line badly, slowly (the search runs twice as many steps as there are source tokens) and
with attention over every source position at every step. Cutting the line at sentence or word
boundaries keeps all three bounded.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from attnmt.config import DecodeConfig
from attnmt.data.batching import sentence_batches, source_arrays
from attnmt.data.vocab import WORD_START
from attnmt.search import Hypothesis, StepModel, beam_search, greedy_search, sample_search

if TYPE_CHECKING:
    import torch

ArrayMaker = Callable[[np.ndarray], Any]  # a padded numpy batch -> the model's input array (tensor)

# Search encodes this many batches at once and steps one batch's worth of sentences at a time, the
# rows of done sentences going to waiting ones (the width of search.greedy_search and beam_search,
# continuous batching): see docs/performance.md. Sampling keeps to one batch.
POOL_BATCHES = 8
SENTENCE_END = tuple(".!?;。！？…؟।")


def max_target_lengths(src_lengths: np.ndarray | Sequence[int], decode: DecodeConfig) -> np.ndarray:
    """Longest allowed output per sentence: ratio * source length + extra tokens. (batch,) int64."""
    ratio_lengths = np.ceil(np.asarray(src_lengths, dtype=np.float64) * decode.max_length_ratio)
    return ratio_lengths.astype(np.int64) + decode.max_length_extra


def decode_ids(
    model: StepModel, src_ids: Sequence[list[int]], decode: DecodeConfig, as_input: ArrayMaker,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Search over many tokenized sentences in length-sorted batches of ``decode.batch_size``; the
    ``decode.n_best`` best hypotheses of each, in input order. ``decode.beam_size`` 1 is greedy search
    (where the coverage penalty, a ranking of beams, does nothing); with ``decode.sampling``,
    ``decode.n_best`` samples each instead, drawn with ``generator`` (``attnmt.runtime.sampling_generator``;
    pass the same one to go on drawing across calls, as a stream does). ``as_input`` makes the
    model's arrays from the numpy ones of each batch: ``attnmt.runtime.tensors_on(device)`` for a
    PyTorch model (which its caller puts in eval mode), ``np.asarray`` for one that takes numpy.
    An empty sentence is still decoded (from its lone ``</s>``): callers decide what empty input means."""
    if decode.sampling and generator is None:
        raise ValueError("sampling needs a random generator (attnmt.runtime.sampling_generator)")
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    # search steps decode.batch_size sentences of a pool of POOL_BATCHES batches at a time
    pool = decode.batch_size * (1 if decode.sampling else POOL_BATCHES)
    for indices in sentence_batches([len(ids) for ids in src_ids], pool):
        src_array, lengths_array = source_arrays([src_ids[i] for i in indices])  # (batch, src_len), (batch,)
        src, src_lengths = as_input(src_array), as_input(lengths_array)
        max_lengths = max_target_lengths(lengths_array, decode)
        if decode.sampling:
            found = sample_search(model, src, src_lengths, max_lengths, decode.n_best, decode.temperature,
                                  decode.top_k, decode.top_p, generator)
        elif decode.beam_size <= 1:
            found = greedy_search(model, src, src_lengths, max_lengths, width=decode.batch_size)
        else:
            found = beam_search(model, src, src_lengths, max_lengths, decode.beam_size, n_best=decode.n_best,
                                length_penalty=decode.length_penalty, coverage_penalty=decode.coverage_penalty,
                                width=decode.batch_size)
        for position, hypotheses in zip(indices, found):
            results[position] = hypotheses
    return results


def decode_long_inputs(
    model: StepModel,
    src_ids: Sequence[list[int]],
    id_to_piece: Callable[[int], str],
    decode: DecodeConfig,
    max_input_tokens: int,
    as_input: ArrayMaker,
    generator: torch.Generator | None = None,
) -> tuple[list[list[Hypothesis]], int]:
    """``decode_ids``, with every input longer than ``max_input_tokens`` cut into pieces
    (``split_points``), the pieces decoded in the same batches as the other inputs and their
    hypotheses joined (``join_n_best``). Returns the results in input order and how many inputs
    were cut."""
    spans = [(i, start, end) for i, ids in enumerate(src_ids)
             for start, end in _input_spans(ids, id_to_piece, max_input_tokens)]
    found = decode_ids(model, [src_ids[i][start:end] for i, start, end in spans], decode, as_input, generator)
    parts: list[list[list[Hypothesis]]] = [[] for _ in src_ids]
    for (i, _, _), hypotheses in zip(spans, found):
        parts[i].append(hypotheses)
    results = [line_parts[0] if len(line_parts) == 1 else join_n_best(line_parts, decode.n_best)
               for line_parts in parts]
    return results, sum(len(line_parts) > 1 for line_parts in parts)


def _input_spans(ids: list[int], id_to_piece: Callable[[int], str], limit: int) -> list[tuple[int, int]]:
    """Where to cut a tokenized input into pieces the model can translate (one span if it fits)."""
    if len(ids) <= limit:
        return [(0, len(ids))]
    return split_points([id_to_piece(t) for t in ids], limit)


def split_points(pieces: Sequence[str], max_tokens: int) -> list[tuple[int, int]]:
    """Spans ``[start, end)`` of at most ``max_tokens`` pieces that cover ``pieces`` in order.

    Each cut goes after the last sentence end in the second half of the window, else before the
    last piece that starts a word, else at ``max_tokens`` pieces (one very long word).
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    spans: list[tuple[int, int]] = []
    start = 0
    while len(pieces) - start > max_tokens:
        end = start + max_tokens
        cut = (
            _last(start + max(max_tokens // 2, 1), end, lambda p: _ends_sentence(pieces[p - 1]))
            or _last(start + 1, end, lambda p: pieces[p].startswith(WORD_START))
            or end
        )
        spans.append((start, cut))
        start = cut
    spans.append((start, len(pieces)))
    return spans


def _ends_sentence(piece: str) -> bool:
    return piece.lstrip(WORD_START).endswith(SENTENCE_END)


def _last(low: int, high: int, is_cut: Callable[[int], bool]) -> int:
    """The largest position in [low, high] where ``is_cut`` holds, or 0."""
    return next((position for position in range(high, low - 1, -1) if is_cut(position)), 0)


def join_hypotheses(parts: Sequence[Hypothesis]) -> Hypothesis:
    """One hypothesis from the hypotheses of consecutive pieces of a source sentence.

    Tokens are concatenated and scores and log-probabilities summed. The attention matrix is block
    diagonal, (sum of target lengths + 1, sum of source lengths + 1): each piece's rows attend to
    its own source tokens, and what a piece gave its own ``</s>`` goes to the sentence's ``</s>``
    column; only the last piece's ``</s>`` row is kept. Rows still sum to 1. (None for a model
    without attention.)
    """
    if len(parts) == 1:
        return parts[0]
    return Hypothesis(
        tokens=[token for part in parts for token in part.tokens],
        score=sum(part.score for part in parts),
        log_prob=sum(part.log_prob for part in parts),
        attention=None if parts[0].attention is None else _block_diagonal([part.attention for part in parts]),
    )


def _block_diagonal(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """The pieces' (rows, piece_src_len + 1) matrices -> (len(tokens) + 1, src_total + 1), as above."""
    src_total = sum(attention.shape[1] - 1 for attention in attentions)
    blocks, offset = [], 0
    for index, attention in enumerate(attentions):
        rows = attention if index == len(attentions) - 1 else attention[:-1]  # (rows, piece_src_len + 1)
        n_src = attention.shape[1] - 1
        block = np.zeros((rows.shape[0], src_total + 1), dtype=rows.dtype)  # (rows, src_total + 1)
        block[:, offset : offset + n_src] = rows[:, :n_src]
        block[:, -1] = rows[:, -1]
        blocks.append(block)
        offset += n_src
    return np.concatenate(blocks)


def join_n_best(parts: Sequence[Sequence[Hypothesis]], n_best: int) -> list[Hypothesis]:
    """The k-th joined hypothesis takes each piece's k-th best (or its last, if it has fewer)."""
    count = min(n_best, max(len(part) for part in parts))
    return [join_hypotheses([part[min(k, len(part) - 1)] for part in parts]) for k in range(count)]


def with_search(decode: DecodeConfig, **settings: Any) -> DecodeConfig:
    """``decode`` with the search settings that are given (not None) replaced, e.g.
    ``with_search(decode, beam_size=1, n_best=None)``."""
    return dataclasses.replace(decode, **{key: value for key, value in settings.items() if value is not None})
