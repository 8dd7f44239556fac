import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import torch

from attnmt.evaluate import length_buckets, score_by_length
from attnmt.explain.viz import Heatmap, plot_attention, plot_heatmaps, plot_scores_by_length

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_attention(trg_len: int, src_len: int, seed: int = 0) -> np.ndarray:
    weights = np.random.default_rng(seed).random((trg_len, src_len)) + 1e-3
    return weights / weights.sum(axis=1, keepdims=True)


def test_import_does_not_load_matplotlib():
    code = "import sys, attnmt.explain.viz; assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_writes_png(tmp_path):
    src = ["ein", "Hund", "läuft", ".", "</s>"]
    trg = ["a", "dog", "runs", ".", "</s>"]
    path = plot_attention(random_attention(5, 5), src, trg, tmp_path / "sub" / "attention.png", title="test")
    assert path == tmp_path / "sub" / "attention.png"
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_writes_svg_from_tensor(tmp_path):
    attention = torch.softmax(torch.randn(10, 10), dim=-1)
    tokens = [f"w{i}" for i in range(10)]
    path = plot_attention(attention, tokens, tokens, tmp_path / "a.svg")
    root = ElementTree.parse(path).getroot()
    assert root.tag.endswith("svg")


def test_large_matrix_png(tmp_path):
    src = [f"source_word_{i}" for i in range(60)]
    trg = [f"target_{i}" for i in range(55)]
    path = plot_attention(random_attention(55, 60), src, trg, tmp_path / "big.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_bad_suffix_and_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        plot_attention(random_attention(2, 2), ["a", "b"], ["c", "d"], tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        plot_attention(random_attention(2, 3), ["a", "b"], ["c", "d"], tmp_path / "a.png")
    with pytest.raises(ValueError, match="2-D"):
        plot_attention(np.ones(3), ["a", "b", "c"], ["x"], tmp_path / "a.png")
    assert not list(tmp_path.iterdir())


def svg_axes(path) -> int:
    """How many axes (panels and colour bars) an SVG written by matplotlib holds."""
    return len(re.findall(r'<g id="axes_\d+"', path.read_text(encoding="utf-8")))


def test_several_heatmaps_side_by_side_on_one_colour_scale(tmp_path):
    heatmaps = [
        Heatmap(random_attention(3, 4, seed), [f"s{i}" for i in range(4)], [f"t{i}" for i in range(3)], f"panel {seed}")
        for seed in range(3)
    ]
    path = plot_heatmaps(heatmaps, tmp_path / "three.svg")
    assert svg_axes(path) == 4  # three heatmaps and one shared colour bar
    assert svg_axes(plot_attention(heatmaps[0].attention, heatmaps[0].src_tokens, heatmaps[0].trg_tokens,
                                   tmp_path / "one.svg")) == 2
    with pytest.raises(ValueError, match="no heatmaps"):
        plot_heatmaps([], tmp_path / "none.png")
    with pytest.raises(ValueError, match="columns must be at least 1"):
        plot_heatmaps(heatmaps, tmp_path / "zero.png", columns=0)
    broken = Heatmap(random_attention(3, 4), ["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        plot_heatmaps([heatmaps[0], broken], tmp_path / "broken.png")
    assert not (tmp_path / "broken.png").exists()


def test_scores_by_length_one_panel_per_metric(tmp_path):
    sources = ["a b", "c d", "e f g h i j k", "l m n o p q r"]
    references = ["the cat sat down", "a dog ran away", "one two three four five six", "seven eight nine ten eleven twelve"]
    buckets = length_buckets(sources, width=5, min_sentences=1)
    reports = [score_by_length(name, hypotheses, references, buckets)
               for name, hypotheses in (("perfect", references), ("short", ["the cat", "a dog", "one", "seven"]))]
    path = plot_scores_by_length(reports, tmp_path / "by_length.svg", title="toy")
    assert svg_axes(path) == 2  # BLEU and chrF2
    assert plot_scores_by_length(reports, tmp_path / "by_length.png").read_bytes().startswith(PNG_MAGIC)
