"""Inputs too long for the model: cut them into pieces at sentence or word boundaries, translate
each piece, and join the pieces' hypotheses back into one.

A model trained on sentences of at most ``data.max_src_tokens`` tokens translates a 10,000-token
line badly, slowly (the search runs twice as many steps as there are source tokens) and with
attention over every source position at every step. Cutting the line keeps all three bounded.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from attnmt.search import Hypothesis

WORD_START = "\u2581"  # SentencePiece marks a piece that begins a word with "▁"
SENTENCE_END = tuple(".!?;。！？…؟।")


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
