import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import torch

from attnmt.viz import plot_attention

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_attention(trg_len: int, src_len: int, seed: int = 0) -> np.ndarray:
    weights = np.random.default_rng(seed).random((trg_len, src_len)) + 1e-3
    return weights / weights.sum(axis=1, keepdims=True)


def test_import_does_not_load_matplotlib():
    code = "import sys, attnmt.viz; assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
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
