"""What users do after a first model: average checkpoints, ensemble models, score given translations,
fine-tune on new data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmt.config import load_config
from attnmt.data.batching import collate
from attnmt.data.vocab import BOS_ID, EOS_ID
from attnmt.errors import CheckpointError, ConfigError
from attnmt.store import (
    WEIGHTS_FILE,
    average_models,
    average_weights,
    kept_checkpoints,
    read_weights,
)
from attnmt.training import train
from attnmt.training.prepare import finetune_config
from attnmt.translator import Translator
from toy import assert_batch_size_changes_no_translation, toy_config, toy_pairs, write_toy_corpus

SENTENCES = [source for source, _ in toy_pairs(30, seed=17)] + ["", "one"]


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def kept_model(tmp_path_factory) -> Path:
    """A toy model that kept the checkpoints of its last 3 validations (of 5)."""
    root = tmp_path_factory.mktemp("kept")
    train_prefix, valid_prefix = write_toy_corpus(root / "data", n_train=300)
    config = toy_config(train_prefix, valid_prefix, max_steps=100, valid_every=20, keep_checkpoints=3)
    train(config, root / "model", progress=False, log=quiet)
    return root / "model"


# ---- checkpoint averaging ------------------------------------------------------------------------


def test_the_last_k_validations_are_kept(kept_model):
    assert [path.name for path in kept_checkpoints(kept_model)] == [
        "step_000000060.safetensors", "step_000000080.safetensors", "step_000000100.safetensors"]


def test_averaging_k_copies_of_one_checkpoint_gives_that_checkpoint(kept_model, tmp_path):
    checkpoint = kept_checkpoints(kept_model)[-1]
    copies = []
    for number in range(4):
        copies.append(tmp_path / f"copy{number}.safetensors")
        shutil.copyfile(checkpoint, copies[-1])
    original = read_weights(checkpoint)
    averaged = average_weights(copies)
    assert set(averaged) == set(original)
    for name, tensor in original.items():
        assert averaged[name].dtype == tensor.dtype and torch.equal(averaged[name], tensor), name


def test_attnmt_average_writes_a_model_of_the_mean_weights(kept_model, tmp_path):
    out = tmp_path / "averaged"
    completed = subprocess.run([sys.executable, "-m", "attnmt", "average", str(kept_model), "--last", "2",
                                "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    last_two = [read_weights(path) for path in kept_checkpoints(kept_model)[-2:]]
    written = read_weights(out / WEIGHTS_FILE)
    for name, tensor in written.items():
        torch.testing.assert_close(tensor, (last_two[0][name] + last_two[1][name]) / 2, rtol=0, atol=1e-7)
    translations = Translator.load(out).translate(SENTENCES, beam=2)  # a complete model directory
    assert len(translations) == len(SENTENCES) and translations[-2].text == ""


def test_average_last_validates_the_mean_and_keeps_it_only_if_better(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=300)
    config = toy_config(train_prefix, valid_prefix, max_steps=60, valid_every=20, keep_checkpoints=2, average_last=2)
    messages: list[str] = []
    train(config, tmp_path / "model", progress=False, log=messages.append)
    assert any("the average of the last 2 checkpoints: valid loss" in m for m in messages)
    with pytest.raises(ConfigError, match="train.keep_checkpoints to at least 3"):
        toy_config(train_prefix, valid_prefix, keep_checkpoints=2, average_last=3)


def test_averaging_checkpoints_of_different_models_is_an_error(kept_model, toy_model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="are not the same model"):
        average_models([kept_model, toy_model_dir], tmp_path / "mixed")


# ---- ensembles -------------------------------------------------------------------------------------


def test_an_ensemble_of_one_model_is_that_model(toy_model_dir):
    single, ensemble = Translator.load(toy_model_dir), Translator.load(toy_model_dir, ensemble=[])
    for beam in (1, 3):
        expected, found = single.translate(SENTENCES, beam=beam), ensemble.translate(SENTENCES, beam=beam)
        assert [(t.text, t.score) for t in found] == [(t.text, t.score) for t in expected]


def test_an_ensemble_of_a_model_with_itself_translates_as_the_model(toy_model_dir):
    single = Translator.load(toy_model_dir)
    doubled = Translator.load(toy_model_dir, ensemble=[toy_model_dir])
    assert doubled.attention_source == "the mean attention of the ensemble's 2 models"
    assert doubled.num_parameters == 2 * single.num_parameters
    for beam in (1, 3):
        expected, found = single.translate(SENTENCES, beam=beam), doubled.translate(SENTENCES, beam=beam)
        assert [t.text for t in found] == [t.text for t in expected]
        assert [t.score for t in found] == pytest.approx([t.score for t in expected], abs=1e-4)
        for a, b in zip(found, expected):
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)


def test_an_ensemble_searching_a_few_sentences_at_a_time_translates_as_one_batch(toy_model_dir):
    """Continuous batching joins the ensemble's states (one per model) as it joins one model's."""
    assert_batch_size_changes_no_translation(Translator.load(toy_model_dir, ensemble=[toy_model_dir]), SENTENCES, 3)


def test_an_ensemble_decodes_with_the_mean_of_its_models_log_probabilities(toy_model_dir, kept_model):
    """Two different models sharing nothing but an architecture: the ensemble's step is the
    renormalised mean of theirs."""
    copied = kept_model.parent / "kept-with-toy-tokenizers"
    if not copied.exists():  # the kept model trained its own tokenizers: give it the toy model's to ensemble
        shutil.copytree(toy_model_dir, copied)
        shutil.copyfile(kept_checkpoints(kept_model)[0], copied / WEIGHTS_FILE)
    pair = Translator.load(toy_model_dir, ensemble=[copied])
    first, second = Translator.load(toy_model_dir).model, Translator.load(copied).model
    batch = collate(pair.src_tokenizer.encode_batch(["one two three", "four"]), None, [0, 1])
    with torch.inference_mode():
        steps = []
        for model in (pair.model, first, second):
            memory, state = model.encode(batch.src, batch.src_lengths)
            steps.append(model.step(torch.full((2,), BOS_ID), state, memory))
    expected = torch.log_softmax((steps[1][0] + steps[2][0]) / 2, dim=-1)
    torch.testing.assert_close(steps[0][0], expected)
    torch.testing.assert_close(steps[0][2], (steps[1][2] + steps[2][2]) / 2)


def test_models_with_different_target_vocabularies_cannot_be_ensembled(toy_model_dir, kept_model):
    with pytest.raises(CheckpointError, match=rf"{kept_model} and {toy_model_dir} have different vocabularies"):
        Translator.load(toy_model_dir, ensemble=[kept_model])


def test_translate_cli_with_an_ensemble_gives_one_line_per_line(toy_model_dir, tmp_path):
    source = tmp_path / "in.en"
    source.write_text("one two\n\nthree four five\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "-i", str(source),
                                "--ensemble", str(toy_model_dir), "--beam", "2"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split("\n") == ["eins zwei", "", "drei vier fünf", ""]


# ---- scoring ---------------------------------------------------------------------------------------


def test_a_pairs_score_is_the_sum_of_the_step_log_probabilities_of_teacher_forcing(toy_model_dir):
    translator = Translator.load(toy_model_dir)
    pairs = [("one two three", "eins zwei drei"), ("four", "fünf sechs"), ("", "eins"), ("seven", "")]
    scores = translator.score([s for s, _ in pairs], [t for _, t in pairs])
    model = translator.model
    for (source, target), score in zip(pairs, scores):
        src_ids, trg_ids = translator.src_tokenizer.encode(source), translator.trg_tokenizer.encode(target)
        batch = collate([src_ids], None, [0])
        total, previous = 0.0, BOS_ID
        with torch.inference_mode():
            memory, state = model.encode(batch.src, batch.src_lengths)
            for token in trg_ids + [EOS_ID]:  # teacher forcing, one step at a time through search's protocol
                log_probs, state, _ = model.step(torch.tensor([previous]), state, memory)
                total += float(log_probs[0, token])
                previous = token
        assert score.tokens == len(trg_ids) + 1 and score.pieces[-1] == "</s>"
        assert score.log_prob == pytest.approx(total, abs=1e-4)
        assert score.per_token == pytest.approx(total / (len(trg_ids) + 1), abs=1e-5)
    assert scores[0].per_token > scores[1].per_token  # a right translation is more probable than a wrong one


def test_score_cli_writes_one_line_per_pair_and_names_both_files_when_they_differ(toy_model_dir, tmp_path):
    (tmp_path / "s.en").write_text("one two\nthree\n", encoding="utf-8")
    (tmp_path / "s.de").write_text("eins zwei\ndrei\n", encoding="utf-8")
    (tmp_path / "short.de").write_text("eins zwei\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "attnmt", "score", str(toy_model_dir), "--src",
                                str(tmp_path / "s.en"), "--trg", str(tmp_path / "s.de"), "--alignment"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    expected = Translator.load(toy_model_dir).score(["one two", "three"], ["eins zwei", "drei"])
    assert [line.split("\t")[:3] for line in lines] == [
        [f"{s.log_prob:.4f}", f"{s.per_token:.4f}", str(s.tokens)] for s in expected]
    assert [line.split("\t")[3] for line in lines] == ["0-0 1-1", "0-0"]
    mismatched = subprocess.run([sys.executable, "-m", "attnmt", "score", str(toy_model_dir), "--src",
                                 str(tmp_path / "s.en"), "--trg", str(tmp_path / "short.de")],
                                capture_output=True, text=True, timeout=120)
    assert mismatched.returncode == 1
    assert "s.en has 2 lines" in mismatched.stderr and "short.de has 1 lines" in mismatched.stderr


def test_rescoring_an_n_best_list_with_its_own_model_keeps_the_search_scores(toy_model_dir, tmp_path):
    sources = ["one two three", "four five"]
    (tmp_path / "src.en").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    translate = subprocess.run([sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "-i",
                                str(tmp_path / "src.en"), "--beam", "3", "--n-best", "3"],
                               capture_output=True, text=True, timeout=120, check=True)
    (tmp_path / "nbest.txt").write_text(translate.stdout, encoding="utf-8")
    rescored = subprocess.run([sys.executable, "-m", "attnmt", "score", str(toy_model_dir), "--src",
                               str(tmp_path / "src.en"), "--n-best", str(tmp_path / "nbest.txt")],
                              capture_output=True, text=True, timeout=120)
    assert rescored.returncode == 0, rescored.stderr
    for searched, scored in zip(translate.stdout.splitlines(), rescored.stdout.splitlines()):
        searched_fields, scored_fields = searched.split(" ||| "), scored.split(" ||| ")
        assert scored_fields[0::2] == searched_fields[0::2]  # the same order: the same model ranks
        assert [float(x) for x in scored_fields[1::2]] == pytest.approx(
            [float(x) for x in searched_fields[1::2]], abs=2e-4)


# ---- fine-tuning -----------------------------------------------------------------------------------


def test_fine_tuning_starts_from_the_models_weights_and_tokenizers(toy_model_dir, tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "new", n_train=60, seed=5)
    base = Translator.load(toy_model_dir)
    (tmp_path / "tune.yaml").write_text(
        f"data: {{train: {train_prefix}, valid: {valid_prefix}, src_lang: en, trg_lang: de}}\n"
        "train: {max_steps: 1, valid_every: 1, learning_rate: 1.0e-9, schedule: constant}\n", encoding="utf-8")
    config = load_config(tmp_path / "tune.yaml")
    assert config.model != base.config.model  # the defaults: not the toy model's architecture
    config = finetune_config(config, {"data.train", "train.max_steps"}, toy_model_dir)
    assert (config.model, config.vocab) == (base.config.model, base.config.vocab)
    messages: list[str] = []
    train(config, tmp_path / "tuned", progress=False, log=messages.append, init_from=toy_model_dir)
    assert any("fine-tuning: starting from the weights of" in m for m in messages)
    tuned = Translator.load(tmp_path / "tuned")
    assert tuned.src_tokenizer.serialized == base.src_tokenizer.serialized
    # one step at a learning rate of 1e-9 changes no translation: the weights are the model's
    assert [t.text for t in tuned.translate(SENTENCES, beam=1)] == [t.text for t in base.translate(SENTENCES, beam=1)]


def test_fine_tuning_refuses_a_config_that_contradicts_the_models_vocabulary(toy_model_dir, tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "new", n_train=30)
    (tmp_path / "tune.yaml").write_text(
        f"data: {{train: {train_prefix}, valid: {valid_prefix}, src_lang: en, trg_lang: de}}\n"
        "vocab: {size: 500}\nmodel: {dropout: 0.2}\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "attnmt", "train", str(tmp_path / "tune.yaml"), "--model-dir",
                                str(tmp_path / "tuned"), "--init-from", str(toy_model_dir)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert "vocab.size: 500 here, 40 in" in completed.stderr and "model.dropout" not in completed.stderr
    assert not (tmp_path / "tuned").exists()


# ---- sampling through the translator -----------------------------------------------------------------


def test_sampled_translations_are_reproducible_for_a_seed_and_differ_across_chunks(toy_model_dir):
    translator = Translator.load(toy_model_dir)
    texts = ["one two three four five"] * 40
    options = dict(n_best=2, sampling=True, temperature=3.0, seed=5, chunk_size=10)
    first = [[t.text for t in n_best] for n_best in translator.translate_stream(texts, **options)]
    again = [[t.text for t in n_best] for n_best in translator.translate_stream(texts, **options)]
    assert first == again and all(len(samples) == 2 for samples in first)
    chunks = [tuple(map(tuple, first[start:start + 10])) for start in range(0, 40, 10)]
    assert len(set(chunks)) > 1  # one generator for the whole stream: chunks do not repeat each other's draws
    other_seed = [[t.text for t in n_best] for n_best in translator.translate_stream(texts, **{**options, "seed": 6})]
    assert other_seed != first
