"""Attention heatmaps: one row per target token, one column per source token.

matplotlib is imported inside the functions that draw, so ``import attnmt.viz`` stays cheap; drawing
goes through the Agg canvas directly (no pyplot state, no GUI backend, safe inside a server).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attnmt.alignment import as_matrix, check_shape

if TYPE_CHECKING:
    import torch

_SUFFIXES = {".png": "png", ".svg": "svg"}

_CELL_INCHES = 0.35
_MIN_INCHES, _MAX_INCHES = 4.0, 22.0


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
    matrix = as_matrix(attention)  # (trg_len, src_len)
    check_shape(matrix, src_tokens, trg_tokens)

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
