"""Attention heatmaps: one row per target token, one column per source token.

matplotlib is imported inside the functions that draw, so ``import attnmt.viz`` stays cheap; drawing
goes through the Agg canvas directly (no pyplot state, no GUI backend, safe inside a server).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word
_SPECIAL_TOKEN = re.compile(r"^<[^<>\s]+>$")  # </s>, <unk>, <pad>, ...
_SUFFIXES = {".png": "png", ".svg": "svg"}

_CELL_INCHES = 0.35
_MIN_INCHES, _MAX_INCHES = 4.0, 22.0


def _to_matrix(attention: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a 2-D numpy array or torch tensor."""
    if hasattr(attention, "detach"):  # a torch.Tensor; checked by duck typing to avoid importing torch
        attention = attention.detach().cpu().float().numpy()
    matrix = np.asarray(attention, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"attention must be 2-D (trg_len, src_len), got shape {matrix.shape}")
    return matrix


def _check_shape(matrix: np.ndarray, src_tokens: list[str], trg_tokens: list[str]) -> None:
    expected = (len(trg_tokens), len(src_tokens))
    if matrix.shape != expected:
        raise ValueError(
            f"attention has shape {matrix.shape} (trg_len, src_len) but the tokens give "
            f"{expected}: {len(trg_tokens)} target and {len(src_tokens)} source tokens"
        )


def plot_attention(
    attention: np.ndarray | torch.Tensor,
    src_tokens: list[str],
    trg_tokens: list[str],
    path: Path,
    title: str | None = None,
) -> Path:
    """Draw ``attention`` (trg_len, src_len), weights in 0..1, as a heatmap; write PNG or SVG by suffix."""
    path = Path(path)
    image_format = _SUFFIXES.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot write {path.name!r}: use a .png or .svg suffix")
    matrix = _to_matrix(attention)  # (trg_len, src_len)
    _check_shape(matrix, src_tokens, trg_tokens)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    trg_len, src_len = matrix.shape
    # Cells of a fixed size plus room for labels and colorbar, bounded so long sentences stay printable.
    width = float(np.clip(_CELL_INCHES * src_len + 2.5, _MIN_INCHES, _MAX_INCHES))
    height = float(np.clip(_CELL_INCHES * trg_len + 1.5, _MIN_INCHES - 1, _MAX_INCHES))
    longest_side = max(trg_len, src_len)
    font_size = 10 if longest_side <= 20 else 8 if longest_side <= 40 else 6

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    colorbar_axes = make_axes_locatable(axes).append_axes("right", size=0.2, pad=0.15)  # inches
    figure.colorbar(image, cax=colorbar_axes)

    axes.xaxis.tick_top()  # source labels read along the top, as in Bahdanau et al. (2014)
    axes.xaxis.set_label_position("top")
    long_labels = any(len(token) > 3 for token in src_tokens) or src_len > 20
    axes.set_xticks(range(src_len), labels=src_tokens, fontsize=font_size, rotation=90 if long_labels else 0)
    axes.set_yticks(range(trg_len), labels=trg_tokens, fontsize=font_size)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    axes.tick_params(length=0)
    if title:
        axes.set_title(title, pad=12)  # placed above the top tick labels

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format=image_format, bbox_inches="tight", dpi=150)
    return path


def _group_words(pieces: list[str]) -> list[list[int]]:
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


def _word_label(pieces: list[str]) -> str:
    return "".join(pieces).replace(WORD_START, "") or WORD_START


def merge_subwords(
    attention: np.ndarray | torch.Tensor, src_pieces: list[str], trg_pieces: list[str], merge_target: bool = True
) -> tuple[np.ndarray, list[str], list[str]]:
    """Word-level attention from SentencePiece-level attention.

    Columns of a source word are summed (the mass given to the word); rows of a target word are
    averaged, so rows that summed to 1 still do. Returns (attention_words, src_words, trg_words),
    labels without "▁". ``merge_target=False`` keeps one row per target piece (e.g. characters of
    an output with no spaces).
    """
    matrix = _to_matrix(attention)  # (trg_pieces, src_pieces)
    _check_shape(matrix, src_pieces, trg_pieces)
    src_words = _group_words(src_pieces)
    trg_words = _group_words(trg_pieces) if merge_target else [[i] for i in range(len(trg_pieces))]

    sum_sources = np.zeros((len(src_pieces), len(src_words)))  # (src_pieces, src_words)
    for word_index, piece_indices in enumerate(src_words):
        sum_sources[piece_indices, word_index] = 1.0
    average_targets = np.zeros((len(trg_words), len(trg_pieces)))  # (trg_words, trg_pieces)
    for word_index, piece_indices in enumerate(trg_words):
        average_targets[word_index, piece_indices] = 1.0 / len(piece_indices)

    attention_words = average_targets @ matrix @ sum_sources  # (trg_words, src_words)
    src_labels = [_word_label([src_pieces[i] for i in word]) for word in src_words]
    trg_labels = [_word_label([trg_pieces[i] for i in word]) for word in trg_words]
    return attention_words, src_labels, trg_labels
