"""End to end in Python: train on real files, translate, save and load, search invariants."""

import copy
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import attnmt.training.loop as training
import attnmt.training.prepare as preparation
from attnmt.store import METRICS_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE
from attnmt.config import Config, VocabConfig
from attnmt.data.corpus import CorpusError
from attnmt.training.loop import TrainingError, train
from attnmt.data.batching import collate
from attnmt.search import beam_search, greedy_search
from attnmt.decoding import max_target_lengths
from attnmt.translator import Translator
from toy import LEXICON, StepClock, toy_config, toy_pairs, write_toy_corpus


def quiet(message: str) -> None:
    pass


def test_a_tiny_model_learns_20_pairs_by_heart(tmp_path):
    train_prefix, _ = write_toy_corpus(tmp_path / "data", n_train=20, n_valid=20, seed=7)
    config = toy_config(train_prefix, train_prefix, max_steps=250, valid_every=250, batch_tokens=1000)
    train(config, tmp_path / "model", progress=False, log=quiet)
    sources = (tmp_path / "data" / "train.en").read_text().splitlines()
    targets = (tmp_path / "data" / "train.de").read_text().splitlines()
    outputs = [t.text for t in Translator.load(tmp_path / "model").translate(sources, beam=1)]
    assert outputs == targets


def test_the_model_directory_holds_what_the_design_says(toy_model_dir):
    names = {p.name for p in toy_model_dir.iterdir()}
    assert {"config.yaml", WEIGHTS_FILE, TRAINER_STATE_FILE, METRICS_FILE, "src.spm.model", "trg.spm.model"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".bin"))]


def test_the_toy_model_translates_unseen_sentences(toy_model_dir):
    pairs = toy_pairs(30, seed=999)
    outputs = [t.text for t in Translator.load(toy_model_dir).translate([s for s, _ in pairs], beam=3)]
    correct = sum(o == t for o, (_, t) in zip(outputs, pairs))
    assert correct >= 27, list(zip(outputs, pairs))


def test_translation_carries_tokens_score_and_attention(toy_model_dir):
    translation = Translator.load(toy_model_dir).translate(["one two three"], beam=3)[0]
    assert translation.text == "eins zwei drei"
    src_labels, trg_labels = translation.attention_labels
    assert translation.attention.shape == (len(trg_labels), len(src_labels))
    assert translation.attention.sum(axis=1) == pytest.approx(1.0, abs=1e-5)
    assert translation.score < 0 and translation.log_prob < 0


@pytest.mark.parametrize("rnn, attention", [("gru", "general"), ("lstm", "additive"), ("gru", "dot")])
def test_the_default_vocabulary_with_shared_and_tied_embeddings_trains_saves_loads_and_translates(
    tmp_path, monkeypatch, rnn, attention
):
    """VocabConfig's defaults (one joint spm.model with byte fallback), share_embeddings and
    tie_output: trained a few dozen steps, saved, loaded; the loaded model translates exactly as
    the model in memory whose weights were saved."""
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=200)
    config = toy_config(train_prefix, valid_prefix, max_steps=40, valid_every=40)  # one validation: at the end
    config.vocab = VocabConfig()
    config.model = replace(config.model, rnn=rnn, attention=attention, share_embeddings=True, tie_output=True,
                           encoder_hidden_size=16, hidden_size=32)  # dot: hidden_size = 2 * encoder_hidden_size
    config.validate()
    in_memory = keep_what_training_saves(monkeypatch)
    train(config, tmp_path / "model", progress=False, log=quiet)
    monkeypatch.undo()

    [model], [data] = in_memory["models"], in_memory["data"]  # the best weights are saved once, at step 40
    trained = Translator(model, config, data.src_tokenizer, data.trg_tokenizer)
    loaded = Translator.load(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").glob("*.model")) == ["spm.model"]
    assert loaded.src_tokenizer.byte_fallback and loaded.trg_tokenizer is loaded.src_tokenizer
    assert loaded.model.encoder.embedding is loaded.model.decoder.embedding
    assert loaded.model.output_layer.weight is loaded.model.decoder.embedding.weight

    sentences = [s for s, _ in toy_pairs(20, seed=5)] + ["", "  ", "zzz unknown words", "one 日本 € two"]
    for beam in (1, 4):
        expected, found = trained.translate(sentences, beam=beam), loaded.translate(sentences, beam=beam)
        assert len(found) == len(sentences)
        assert [t.text for t in found] == [t.text for t in expected]
        assert [t.score for t in found] == [t.score for t in expected]
        for a, b in zip(found, expected):
            np.testing.assert_array_equal(a.attention, b.attention)
        assert all("\n" not in t.text for t in found)  # one line out per line in
        german = [t.text for t in found[:20] if t.text and set(t.text.split()) <= set(LEXICON.values())]
        assert len(german) >= 10, [t.text for t in found]  # a real model to compare, not empty against empty


def keep_what_training_saves(monkeypatch) -> dict[str, list]:
    """Spy on training: a copy of the model each time its best weights are written, and the prepared
    data with its tokenizers as training built them. The real functions still run."""
    kept: dict[str, list] = {"models": [], "data": []}
    real_save_weights, real_prepare_data = training.save_weights, preparation.prepare_data

    def save_weights(model, path):
        kept["models"].append(copy.deepcopy(model))
        real_save_weights(model, path)

    def prepare_data(*args, **kwargs):
        kept["data"].append(real_prepare_data(*args, **kwargs))
        return kept["data"][-1]

    monkeypatch.setattr(training, "save_weights", save_weights)
    monkeypatch.setattr(preparation, "prepare_data", prepare_data)
    return kept


def test_empty_lines_give_empty_translations_in_place(toy_model_dir):
    outputs = Translator.load(toy_model_dir).translate(["one", "", "   ", "two"], beam=2)
    assert [t.text for t in outputs] == ["eins", "", "", "zwei"]


def test_beam_one_equals_greedy_and_beam_never_scores_below_greedy(toy_model_dir):
    translator = Translator.load(toy_model_dir)
    sentences = [s for s, _ in toy_pairs(40, seed=11, max_words=8)]
    batch = collate(translator.src_tokenizer.encode_batch(sentences), None, list(range(len(sentences))))
    max_lengths = max_target_lengths(batch.src_lengths, translator.config.decode)
    with torch.inference_mode():
        greedy = greedy_search(translator.model, batch.src, batch.src_lengths, max_lengths)
        beam_one = beam_search(translator.model, batch.src, batch.src_lengths, max_lengths, beam_size=1)
        beam_five = beam_search(translator.model, batch.src, batch.src_lengths, max_lengths, beam_size=5,
                                length_penalty=0.0)
    assert [h[0].tokens for h in beam_one] == [h[0].tokens for h in greedy]
    for g, b in zip(greedy, beam_five):
        assert b[0].log_prob >= g[0].log_prob - 1e-4


def test_the_same_seed_gives_the_same_model(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=100)
    for name in ("a", "b"):
        train(toy_config(train_prefix, valid_prefix, max_steps=20, valid_every=20), tmp_path / name, progress=False, log=quiet)
    a, b = load_file(tmp_path / "a" / WEIGHTS_FILE), load_file(tmp_path / "b" / WEIGHTS_FILE)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_refuses_to_overwrite_a_model_by_accident(tmp_path, toy_model_dir):
    config = Config()
    with pytest.raises(TrainingError, match="already holds a model.*--resume.*--overwrite"):
        train(config, toy_model_dir, log=quiet)


def test_missing_or_mismatched_data_is_a_clear_error_before_training(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=30)
    (tmp_path / "data" / "train.de").write_text("eins\nzwei\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"train\.en.*30.*train\.de.*2|train\.de.*2.*train\.en.*30"):
        train(toy_config(train_prefix, valid_prefix), tmp_path / "model", log=quiet)
    assert not (tmp_path / "model" / "spm.model").exists() and not (tmp_path / "model" / "src.spm.model").exists()
    with pytest.raises(CorpusError, match="nowhere"):
        train(toy_config(str(tmp_path / "nowhere" / "train"), valid_prefix), tmp_path / "model2", log=quiet)


def test_an_empty_training_set_is_a_clear_error(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=3)
    for lang in ("en", "de"):
        Path(f"{train_prefix}.{lang}").write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no usable training pairs"):
        train(toy_config(train_prefix, valid_prefix), tmp_path / "model", log=quiet)


def metric_events(model_dir: Path, event: str) -> list[dict]:
    lines = (model_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


def test_early_stopping_stops_when_validation_stops_improving_and_keeps_the_best_weights(tmp_path):
    """Validation targets shifted by one line: the validation loss falls while the model learns which
    words occur, then rises as it learns the real word-for-word mapping."""
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=200)
    targets = Path(f"{valid_prefix}.de").read_text(encoding="utf-8").splitlines()
    Path(f"{valid_prefix}.de").write_text("\n".join(targets[1:] + targets[:1]) + "\n", encoding="utf-8")
    result = train(toy_config(train_prefix, valid_prefix, max_steps=400, valid_every=10, early_stopping_patience=2),
                   tmp_path / "stopped", progress=False, log=quiet)

    validations = metric_events(tmp_path / "stopped", "valid")
    best = min(validations, key=lambda entry: entry["loss"])
    assert result.stop_reason == f"no improvement of loss in 2 validations (best at step {best['step']})"
    assert result.steps == best["step"] + 2 * 10 < 400 and result.best_metric == best["loss"]
    assert [entry["best"] for entry in validations[-3:]] == [True, False, False]

    # The weights kept are those of the best step: a run that ends there saved the same ones,
    # and they are not the last weights of the stopped run.
    train(toy_config(train_prefix, valid_prefix, max_steps=best["step"], valid_every=10), tmp_path / "short",
          progress=False, log=quiet)
    kept, short = load_file(tmp_path / "stopped" / WEIGHTS_FILE), load_file(tmp_path / "short" / WEIGHTS_FILE)
    assert kept.keys() == short.keys() and all(torch.equal(kept[key], short[key]) for key in kept)
    last = load_file(tmp_path / "stopped" / TRAINER_STATE_FILE)
    assert not all(torch.equal(kept[key], last[f"model.{key}"]) for key in kept)


def test_warmup_decay_logs_the_learning_rate_of_linear_warmup_then_inverse_square_root_decay(tmp_path):
    """Step n (from 1) trains at lr * min(n / warmup, sqrt(warmup / n)); the lr logged after step n is
    the one step n + 1 will use."""
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=100)
    config = toy_config(train_prefix, valid_prefix, schedule="warmup_decay", warmup_steps=4, learning_rate=0.01,
                        max_steps=35, valid_every=35, log_every=1)
    train(config, tmp_path / "model", progress=False, log=quiet)
    logged = {entry["step"]: entry["lr"] for entry in metric_events(tmp_path / "model", "train")}
    assert logged[1] == pytest.approx(0.005)  # step 2: 2/4 of the peak
    assert logged[3] == pytest.approx(0.01)  # step 4: the peak, the end of the warmup
    assert logged[15] == pytest.approx(0.005)  # step 16: sqrt(4/16) of the peak
    assert logged[35] == pytest.approx(0.01 / 3)  # step 36: sqrt(4/36)
    assert max(logged.values()) == pytest.approx(0.01)


def test_no_progress_bar_unless_stderr_is_a_terminal(tmp_path, capsys):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=100)
    config = toy_config(train_prefix, valid_prefix, max_steps=5, valid_every=5)
    train(config, tmp_path / "asked", progress=True, log=quiet)
    assert "5/5" in capsys.readouterr().err  # a bar is written where this test captures it, when asked for
    assert not sys.stderr.isatty()
    train(config, tmp_path / "default", progress=None, log=quiet)
    assert capsys.readouterr().err == ""


def test_a_run_bounded_only_by_time_shows_seconds_of_the_budget_with_step_loss_and_throughput(
    tmp_path, capsys, monkeypatch
):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=100)
    config = toy_config(train_prefix, valid_prefix, max_steps=0, max_time=2.0, valid_every=10_000, log_every=5)
    monkeypatch.setattr(time, "perf_counter", StepClock(0.01))  # the same steps on any machine
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # and every update drawn, however fast it comes
    result = train(config, tmp_path / "model", progress=True, log=quiet)
    monkeypatch.undo()
    lines = capsys.readouterr().err.replace("\n", "\r").split("\r")
    bar = re.compile(r"^ *(\d+)%\|.*\| \d+/2s \[\d\d:\d\d<\d\d:\d\d, step=(\d+), loss=[\d.]+, tok_s=\d+\]$")
    drawn = [match for match in map(bar.match, lines) if match]
    assert len(drawn) >= 2, lines[-5:]
    assert drawn[-1].group(1) == "100" and int(drawn[-1].group(2)) == result.steps
