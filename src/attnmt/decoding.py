"""Decoding many tokenized sentences: search in length-sorted batches (``decode_ids``), inputs too
long for the model cut into pieces and joined again (``decode_long_inputs``), and forced decoding
of given translations (``forced_decode``: per-token log-probabilities and attention).

Training validation, the translator, ``align`` and ``score`` all decode through here; everything is
token ids in and hypotheses out, no text.

Long inputs. A model trained on sentences of at most ``data.max_src_tokens`` tokens translates a
10,000-token line badly, slowly (the search runs twice as many steps as there are source tokens) and
with attention over every source position at every step. Cutting the line at sentence or word
boundaries keeps all three bounded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from attnmt.config import DecodeConfig
from attnmt.data.batching import collate, sentence_batches
from attnmt.data.vocab import WORD_START
from attnmt.errors import NoAttentionError
from attnmt.search import Hypothesis, StepModel, beam_search, greedy_search, model_has_attention, sample_search

SENTENCE_END = tuple(".!?;。！？…؟।")


def max_target_lengths(src_lengths: torch.Tensor, decode: DecodeConfig) -> torch.Tensor:
    """Longest allowed output per sentence: ratio * source length + extra tokens."""
    return (src_lengths.double() * decode.max_length_ratio).ceil().long() + decode.max_length_extra


@torch.inference_mode()
def decode_ids(
    model: StepModel, src_ids: Sequence[list[int]], decode: DecodeConfig, device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Search over many tokenized sentences in length-sorted batches of ``decode.batch_size``; the
    ``decode.n_best`` best hypotheses of each, in input order. ``decode.beam_size`` 1 is greedy search
    (where the coverage penalty, a ranking of beams, does nothing); with ``decode.sampling``,
    ``decode.n_best`` samples each instead, drawn with ``generator`` (default: one seeded with
    ``decode.seed``; pass one to go on drawing across calls, as a stream does).
    An empty sentence is still decoded (from its lone ``</s>``): callers decide what empty input means."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    if decode.sampling and generator is None:
        generator = sampling_generator(decode, device)
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for indices in sentence_batches([len(ids) for ids in src_ids], decode.batch_size):
        batch = collate([src_ids[i] for i in indices], None, indices)
        src, src_lengths = batch.src.to(device), batch.src_lengths.to(device)
        max_lengths = max_target_lengths(src_lengths, decode)
        if decode.sampling:
            found = sample_search(model, src, src_lengths, max_lengths, decode.n_best, decode.temperature,
                                  decode.top_k, decode.top_p, generator)
        elif decode.beam_size <= 1:
            found = greedy_search(model, src, src_lengths, max_lengths)
        else:
            found = beam_search(model, src, src_lengths, max_lengths, decode.beam_size, n_best=decode.n_best,
                                length_penalty=decode.length_penalty, coverage_penalty=decode.coverage_penalty)
        for position, hypotheses in zip(batch.indices, found):
            results[position] = hypotheses
    return results


def sampling_generator(decode: DecodeConfig, device: torch.device | str = "cpu") -> torch.Generator:
    """The random generator that sampling with ``decode.seed`` draws from."""
    return torch.Generator(device).manual_seed(decode.seed)


def decode_long_inputs(
    model: StepModel,
    src_ids: Sequence[list[int]],
    id_to_piece: Callable[[int], str],
    decode: DecodeConfig,
    max_input_tokens: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[list[list[Hypothesis]], int]:
    """``decode_ids``, with every input longer than ``max_input_tokens`` cut into pieces
    (``split_points``), the pieces decoded in the same batches as the other inputs and their
    hypotheses joined (``join_n_best``). Returns the results in input order and how many inputs
    were cut."""
    spans = [(i, start, end) for i, ids in enumerate(src_ids)
             for start, end in _input_spans(ids, id_to_piece, max_input_tokens)]
    found = decode_ids(model, [src_ids[i][start:end] for i, start, end in spans], decode, device, generator)
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


def _block_diagonal(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """The pieces' (rows, piece_src_len + 1) matrices -> (len(tokens) + 1, src_total + 1), as above."""
    src_total = sum(attention.size(1) - 1 for attention in attentions)
    blocks, offset = [], 0
    for index, attention in enumerate(attentions):
        rows = attention if index == len(attentions) - 1 else attention[:-1]  # (rows, piece_src_len + 1)
        n_src = attention.size(1) - 1
        block = rows.new_zeros(rows.size(0), src_total + 1)  # (rows, src_total + 1)
        block[:, offset : offset + n_src] = rows[:, :n_src]
        block[:, -1] = rows[:, -1]
        blocks.append(block)
        offset += n_src
    return torch.cat(blocks)


def join_n_best(parts: Sequence[Sequence[Hypothesis]], n_best: int) -> list[Hypothesis]:
    """The k-th joined hypothesis takes each piece's k-th best (or its last, if it has fewer)."""
    count = min(n_best, max(len(part) for part in parts))
    return [join_hypotheses([part[min(k, len(part) - 1)] for part in parts]) for k in range(count)]


# ----------------------------------------------------------------------------- forced decoding


@dataclass
class ForcedDecoding:
    """What the model computed while being fed one given translation."""

    token_log_probs: np.ndarray  # (len(trg)+1,) log-probability of each target token, then of </s>
    attention: np.ndarray | None  # (len(trg)+1, len(src)+1) with the </s> row and column; None without attention

    @property
    def log_prob(self) -> float:
        """The log-probability of the whole translation, </s> included."""
        return float(self.token_log_probs.sum())


@torch.inference_mode()
def forced_decode(
    model: torch.nn.Module,
    src_ids: Sequence[list[int]],
    trg_ids: Sequence[list[int]],
    batch_size: int,
    device: torch.device | str = "cpu",
    need_attention: bool = False,
) -> list[ForcedDecoding]:
    """Forced decoding: the model reads each source and is fed its given target, as in training but
    without dropout, in length-sorted batches of ``batch_size``; results in input order.
    ``need_attention``: a model without attention is then a NoAttentionError."""
    if len(src_ids) != len(trg_ids):
        raise ValueError(f"{len(src_ids)} sources but {len(trg_ids)} targets: they must pair up one to one")
    if need_attention and not model_has_attention(model):
        raise NoAttentionError("the model has no attention (model.attention: none): it cannot align words")
    model.eval()
    results: list[ForcedDecoding] = [ForcedDecoding(np.zeros(0), None)] * len(src_ids)
    for indices in sentence_batches([len(ids) for ids in src_ids], batch_size):
        batch = collate([src_ids[i] for i in indices], [trg_ids[i] for i in indices], indices).to(device)
        logits, attention = model(batch.src, batch.src_lengths, batch.trg_input)  # (batch, trg_len, vocab)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_log_probs = log_probs.gather(2, batch.trg_output.unsqueeze(2)).squeeze(2).cpu().numpy()  # (batch, trg_len)
        attention = None if attention is None else attention.float().cpu().numpy()  # (batch, trg_len, src_len)
        for row, position in enumerate(batch.indices):
            n_trg, n_src = len(trg_ids[position]) + 1, len(src_ids[position]) + 1
            results[position] = ForcedDecoding(
                token_log_probs[row, :n_trg].astype(np.float64),
                None if attention is None else attention[row, :n_trg, :n_src],
            )
    return results


def with_search(decode: DecodeConfig, **settings: Any) -> DecodeConfig:
    """``decode`` with the search settings that are given (not None) replaced, e.g.
    ``with_search(decode, beam_size=1, n_best=None)``."""
    return dataclasses.replace(decode, **{key: value for key, value in settings.items() if value is not None})
