"""The quickstart's measures."""

from __future__ import annotations

import numpy as np
import pytest

from attnmt.datasets.quickstart import month_attention_mass


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
