"""The command line, end to end in real subprocesses: train, translate, evaluate, plot."""

import subprocess
import sys

import pytest

from attnmt.evaluate import score_corpus
from attnmt.translator import Translator
from toy import toy_config, write_toy_corpus


def attnmt(*args, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "attnmt", *map(str, args)], input=stdin, capture_output=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"attnmt {' '.join(map(str, args))} failed:\n{result.stderr.decode()}")
    return result


def test_train_translate_evaluate_plot_round_trip(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=400)
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(toy_config(train_prefix, valid_prefix, max_steps=120).to_yaml(), encoding="utf-8")
    model_dir = tmp_path / "model"

    trained = attnmt("train", config_path, "--model-dir", model_dir, "--set", "train.max_steps=150")
    assert "150 steps" in trained.stderr.decode()
    assert (model_dir / "model.safetensors").exists()

    sources = ["one two three four", "", "five six seven eight nine", "   ", "ten one two three"]
    source = tmp_path / "test.en"
    source.write_text("".join(line + "\n" for line in sources), encoding="utf-8")
    expected = [t.text for t in Translator.load(model_dir).translate(sources, beam=3)]
    assert expected[1] == expected[3] == "" and all(expected[i] for i in (0, 2, 4))
    output = tmp_path / "test.hyp"
    attnmt("translate", model_dir, "-i", source, "-o", output, "--beam", "3")
    lines = output.read_text(encoding="utf-8").split("\n")
    assert lines == expected + [""]  # five lines, each ended by a newline, empty ones in place

    piped = attnmt("translate", model_dir, "--beam", "3", stdin=source.read_bytes())
    assert piped.stdout.decode("utf-8") == output.read_text(encoding="utf-8")

    reference = tmp_path / "test.de"
    reference.write_text("eins zwei drei vier\n\nfünf sechs sieben acht neun\n\nzehn eins zwei drei\n", encoding="utf-8")
    expected_bleu = score_corpus(expected, reference.read_text(encoding="utf-8").split("\n")[:-1])[0]
    scores = attnmt("evaluate", "--hyp", output, "--ref", reference).stdout.decode()
    assert f"BLEU = {expected_bleu.value:.2f}" in scores and "nrefs:1|case:mixed" in scores and "chrF2" in scores
    by_model = attnmt("evaluate", "--model", model_dir, "--src", source, "--ref", reference, "--lowercase").stdout.decode()
    assert "BLEU = " in by_model and "case:lc" in by_model
    itself = attnmt("evaluate", "--hyp", reference, "--ref", reference).stdout.decode()
    assert "BLEU = 100.00" in itself

    for name in ("heatmap.png", "heatmap.svg"):
        plotted = attnmt("plot", model_dir, "one two three", "-o", tmp_path / name, "--words")
        assert Translator.load(model_dir).translate(["one two three"])[0].text in plotted.stdout.decode()
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "heatmap.svg").read_bytes()[:2000]


def test_user_errors_are_one_clear_line_not_a_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  hiden_size: 3\n", encoding="utf-8")
    result = attnmt("train", config, "--model-dir", tmp_path / "m", check=False)
    message = result.stderr.decode()
    assert result.returncode == 1
    assert "unknown key 'model.hiden_size'" in message and "Traceback" not in message

    missing = attnmt("translate", tmp_path / "no-model", stdin=b"hello\n", check=False)
    assert missing.returncode == 1 and "config.yaml is missing" in missing.stderr.decode()


def test_invalid_utf8_input_names_the_line(toy_model_dir, tmp_path):
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"one\ntwo \xff three\n")
    result = attnmt("translate", toy_model_dir, "-i", bad, check=False)
    assert result.returncode == 1 and "bad.en" in result.stderr.decode() and "line 2" in result.stderr.decode()
    replaced = attnmt("translate", toy_model_dir, "-i", bad, "--encoding-errors", "replace")
    assert len(replaced.stdout.decode().split("\n")) == 3


@pytest.mark.parametrize("argv", [["--help"], ["translate", "--help"], ["--version"]])
def test_help_and_version(argv):
    assert attnmt(*argv).returncode == 0
