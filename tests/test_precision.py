"""Decoding in reduced precision: bf16 autocast and int8 weights translate as fp32 does, line for line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from attnmt.config import ConfigError
from attnmt.translator import Translator
from toy import toy_pairs

SENTENCES = [source for source, _ in toy_pairs(40, seed=11)]


@pytest.fixture(scope="module")
def fp32_texts(toy_model_dir) -> list[str]:
    return [t.text for t in Translator.load(toy_model_dir).translate(SENTENCES, beam=3)]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("beam", [1, 3])
def test_reduced_precision_translates_like_fp32(toy_model_dir, fp32_texts, precision, beam):
    translator = Translator.load(toy_model_dir, precision=precision)
    translations = translator.translate(SENTENCES + ["", "   "], beam=beam)
    assert len(translations) == len(SENTENCES) + 2
    assert [t.text for t in translations[-2:]] == ["", ""]
    agreeing = sum(t.text == reference for t, reference in zip(translations, fp32_texts))
    assert agreeing >= 0.9 * len(SENTENCES), f"{precision}, beam {beam}: {agreeing}/{len(SENTENCES)} as in fp32"
    for translation in translations[: len(SENTENCES)]:
        assert translation.attention.dtype == np.float32
        assert translation.attention.shape == (len(translation.tokens) + 1, len(translation.src_tokens) + 1)
        np.testing.assert_allclose(translation.attention.sum(axis=1), 1.0, atol=1e-2)
        assert np.isfinite(translation.score) and translation.score <= 0


def test_int8_quantizes_the_linear_and_recurrent_layers(toy_model_dir):
    model = Translator.load(toy_model_dir, precision="int8").model
    quantized = torch.ao.nn.quantized.dynamic
    assert isinstance(model.output_layer, quantized.Linear)
    assert isinstance(model.encoder.rnn, quantized.GRU) and isinstance(model.decoder.rnn, quantized.GRU)
    assert isinstance(Translator.load(toy_model_dir).model.output_layer, torch.nn.Linear)  # fp32 left as it was


def test_the_parameter_count_is_the_trained_models_in_every_precision(toy_model_dir):
    """int8 packs the weights of its layers away from ``parameters()``: the count is taken before."""
    fp32 = Translator.load(toy_model_dir)
    assert fp32.num_parameters == sum(p.numel() for p in fp32.model.parameters()) > 0
    for precision in ("bf16", "int8"):
        assert Translator.load(toy_model_dir, precision=precision).num_parameters == fp32.num_parameters
    assert sum(p.numel() for p in Translator.load(toy_model_dir, precision="int8").model.parameters()) < fp32.num_parameters


def test_an_unknown_precision_is_a_clear_error(toy_model_dir):
    with pytest.raises(ConfigError, match="fp32, bf16, int8"):
        Translator.load(toy_model_dir, precision="fp8")


def test_translate_cli_with_int8_gives_one_line_per_line(toy_model_dir, tmp_path):
    source = tmp_path / "in.en"
    source.write_text("one two\n\nthree four five\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "-i", str(source),
                                "--precision", "int8", "--beam", "2"], capture_output=True, text=True, check=True)
    lines = completed.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    assert lines[0] == "eins zwei" and lines[2] == "drei vier fünf"
    assert "Warning" not in completed.stderr  # the deprecated quantization API's warnings stay out of the way
