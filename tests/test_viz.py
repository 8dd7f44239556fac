import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.viz import merge_subwords, plot_attention

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


def test_merge_subwords_by_hand():
    src = ["▁Ein", "▁Hund", "e", "▁läuft", "</s>"]  # words: Ein | Hunde | läuft | </s>
    trg = ["▁A", "▁do", "g", "</s>"]  # words: A | dog | </s>
    attention = np.array(
        [
            [0.7, 0.1, 0.1, 0.0, 0.1],
            [0.1, 0.5, 0.2, 0.1, 0.1],
            [0.3, 0.1, 0.0, 0.3, 0.3],
            [0.0, 0.0, 0.0, 0.2, 0.8],
        ]
    )
    words, src_words, trg_words = merge_subwords(attention, src, trg)
    assert src_words == ["Ein", "Hunde", "läuft", "</s>"]
    assert trg_words == ["A", "dog", "</s>"]
    expected = np.array(
        [
            [0.7, 0.2, 0.0, 0.1],
            [0.2, 0.4, 0.2, 0.2],  # mean of "▁do" -> [.1,.7,.1,.1] and "g" -> [.3,.1,.3,.3]
            [0.0, 0.0, 0.2, 0.8],
        ]
    )
    np.testing.assert_allclose(words, expected)


def test_merge_subwords_special_tokens_and_leading_pieces():
    src = ["la", "▁x", "</s>", "y"]  # a first piece without "▁", and a piece after a special token
    words, src_words, _ = merge_subwords(np.full((1, 4), 0.25), src, ["</s>"])
    assert src_words == ["la", "x", "</s>", "y"]
    np.testing.assert_allclose(words, [[0.25, 0.25, 0.25, 0.25]])


def test_merge_subwords_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 2\)"):
        merge_subwords(np.ones((2, 2)), ["▁a", "▁b"], ["▁x", "▁y", "</s>"])


PIECES = st.sampled_from(["▁a", "b", "▁cd", "e", "</s>", "<unk>", "▁"])


@settings(max_examples=60, deadline=None)
@given(
    src=st.lists(PIECES, min_size=1, max_size=8),
    trg=st.lists(PIECES, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_merge_subwords_rows_sum_to_one(src, trg, seed):
    words, src_words, trg_words = merge_subwords(random_attention(len(trg), len(src), seed), src, trg)
    assert words.shape == (len(trg_words), len(src_words))
    np.testing.assert_allclose(words.sum(axis=1), 1.0)
    assert (words >= 0).all()
