"""The quickstart: end to end on a small corpus and a few seconds of training (what
``attnmt quickstart`` does, at a size a test can afford), and its month-attention measure."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pytest

from attnmt.apps.quickstart import SHOWCASE, month_attention_mass, run_quickstart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_short_quickstart_scores_prints_translations_and_draws_the_heatmap(tmp_path):
    messages: list[str] = []
    report = run_quickstart(tmp_path, seed=3, max_time=3.0, progress=False, log=messages.append,
                            n_train=600, n_valid=20, n_test=40)

    assert report.accuracy is not None and 0.0 <= report.accuracy <= 1.0
    assert report.test_pairs == 40
    assert 0 < report.train_seconds <= report.total_seconds
    assert [source for source, _ in report.examples] == SHOWCASE
    for source, output in report.examples:  # each showcase translation is printed
        assert any(repr(source) in message and message.rstrip().endswith(output.strip()) for message in messages)
    assert any("exact match on 40 held-out dates" in message for message in messages)

    assert report.heatmap == tmp_path / "attention.png"
    assert report.heatmap.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(report.heatmap).shape[:2]
    assert height > 100 and width > 100
    assert math.isfinite(report.month_attention) and 0.0 <= report.month_attention <= 1.0
    assert any(str(report.heatmap) in message and "'Juni'" in message for message in messages)
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "quickstart.yaml").is_file()


def test_month_attention_is_the_mean_over_the_month_digits_of_the_month_word_column():
    src_words = ["Donnerstag,", "25.", "Juni", "2009"]
    trg_chars = list("2009-06-25")
    attention = np.full((len(trg_chars), len(src_words)), 0.1)
    attention[5, 2], attention[6, 2] = 0.9, 0.5  # the two month digits on "Juni"
    assert month_attention_mass(attention, src_words, trg_chars, "Juni") == pytest.approx(0.7)


@pytest.mark.parametrize("output", ["2009", "2009-0625", "2009--25"])
def test_month_attention_of_an_output_without_month_digits_is_zero(output):
    trg_chars = list(output)
    attention = np.full((len(trg_chars), 4), 0.25)
    assert month_attention_mass(attention, ["Donnerstag,", "25.", "Juni", "2009"], trg_chars, "Juni") == 0.0
