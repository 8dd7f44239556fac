"""Attention heatmaps (one row per target token, one column per source token), alone or side by
side, and the plot of translation quality by sentence length.

matplotlib is imported inside the functions that draw, so ``import attnmt.explain.viz`` stays cheap; drawing
goes through the Agg canvas directly (no pyplot state, no GUI backend, safe inside a server).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from attnmt.explain.alignment import as_matrix, check_shape

if TYPE_CHECKING:
    import torch

    from attnmt.evaluate import LengthReport

_SUFFIXES = {".png": "png", ".svg": "svg"}

_CELL_INCHES = 0.35
_MIN_INCHES, _MAX_INCHES = 4.0, 22.0


@dataclass
class Heatmap:
    """One attention matrix with its labels: one row per target token, one column per source token."""

    attention: np.ndarray | torch.Tensor  # (len(trg_tokens), len(src_tokens)), weights in 0..1
    src_tokens: list[str]
    trg_tokens: list[str]
    title: str | None = None


def plot_attention(
    attention: np.ndarray | torch.Tensor,
    src_tokens: list[str],
    trg_tokens: list[str],
    path: Path,
    title: str | None = None,
) -> Path:
    """Draw ``attention`` (trg_len, src_len), weights in 0..1, as a heatmap; write PNG or SVG by suffix."""
    return plot_heatmaps([Heatmap(attention, src_tokens, trg_tokens, title)], path)


def plot_heatmaps(heatmaps: Sequence[Heatmap], path: Path, columns: int | None = None) -> Path:
    """Draw several heatmaps side by side, ``columns`` to a row (default: up to 3), on one colour
    scale; each column and row of the grid is sized for its largest heatmap. PNG or SVG by suffix."""
    path, image_format = _image_path(path)
    if not heatmaps:
        raise ValueError("no heatmaps to draw")
    if columns is not None and columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    matrices = [as_matrix(heatmap.attention) for heatmap in heatmaps]  # each (trg_len, src_len)
    for matrix, heatmap in zip(matrices, heatmaps):
        check_shape(matrix, heatmap.src_tokens, heatmap.trg_tokens)
    columns = min(len(heatmaps), columns or 3)
    rows = -(-len(heatmaps) // columns)
    grid = [list(range(row * columns, min((row + 1) * columns, len(heatmaps)))) for row in range(rows)]

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Cells of a fixed size plus room for labels, bounded so long sentences stay printable.
    widths = [_inches(max(matrices[i].shape[1] for i in cells_in_column) * _CELL_INCHES + 2.0, _MIN_INCHES)
              for cells_in_column in ([row[c] for row in grid if c < len(row)] for c in range(columns))]
    heights = [_inches(max(matrices[i].shape[0] for i in row) * _CELL_INCHES + 1.5, _MIN_INCHES - 1) for row in grid]
    figure = Figure(figsize=(sum(widths) + 0.8, sum(heights)), layout="constrained")
    FigureCanvasAgg(figure)
    spec = figure.add_gridspec(rows, columns, width_ratios=widths, height_ratios=heights)
    image = None
    for row_index, row in enumerate(grid):
        for column_index, panel in enumerate(row):
            axes = figure.add_subplot(spec[row_index, column_index])
            image = _draw_heatmap(axes, matrices[panel], heatmaps[panel])
    figure.colorbar(image, ax=figure.axes, shrink=min(1.0, 4.0 / sum(heights) + 0.3), aspect=30, label="attention")
    return _save(figure, path, image_format)


def _draw_heatmap(axes, matrix: np.ndarray, heatmap: Heatmap):
    trg_len, src_len = matrix.shape
    longest_side = max(trg_len, src_len)
    font_size = 10 if longest_side <= 20 else 8 if longest_side <= 40 else 6
    image = axes.imshow(matrix, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    axes.xaxis.tick_top()  # source labels read along the top, as in Bahdanau et al. (2014)
    axes.xaxis.set_label_position("top")
    long_labels = any(len(token) > 3 for token in heatmap.src_tokens) or src_len > 20
    axes.set_xticks(range(src_len), labels=heatmap.src_tokens, fontsize=font_size, rotation=90 if long_labels else 0)
    axes.set_yticks(range(trg_len), labels=heatmap.trg_tokens, fontsize=font_size)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    axes.tick_params(length=0)
    if heatmap.title:
        axes.set_title(heatmap.title, pad=12, wrap=True)  # placed above the top tick labels
    return image


def plot_scores_by_length(reports: Sequence[LengthReport], path: Path, title: str | None = None) -> Path:
    """One panel per metric: each system's score on each source-length bucket, at the bucket's mean
    length, as in Figure 2 of Bahdanau et al. (2014). PNG or SVG by suffix."""
    path, image_format = _image_path(path)
    if not reports:
        raise ValueError("no systems to plot")
    buckets = reports[0].buckets

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric_names = [score.name for score in reports[0].overall]
    figure = Figure(figsize=(5.0 * len(metric_names), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    positions = [bucket.mean_length for bucket in buckets]
    tick_labels = [f"{bucket.label}\n({len(bucket.indices)})" for bucket in buckets]
    markers = "osD^v<>"
    for metric_index, metric_name in enumerate(metric_names):
        axes = figure.add_subplot(1, len(metric_names), metric_index + 1)
        for system_index, report in enumerate(reports):
            values = [scores[metric_index].value for scores in report.bucket_scores]
            overall = report.overall[metric_index].value
            axes.plot(positions, values, marker=markers[system_index % len(markers)],
                      label=f"{report.name} ({overall:.1f} overall)")
        axes.set_xticks(positions, labels=tick_labels, fontsize=8)
        axes.set_xlabel("source sentence length in words (sentences)")
        axes.set_ylabel(metric_name)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path, image_format)


def _inches(value: float, low: float) -> float:
    return float(np.clip(value, low, _MAX_INCHES))


def _image_path(path: Path) -> tuple[Path, str]:
    path = Path(path)
    image_format = _SUFFIXES.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot write {path.name!r}: use a .png or .svg suffix")
    return path, image_format


def _save(figure, path: Path, image_format: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format=image_format, bbox_inches="tight", dpi=150)
    return path
