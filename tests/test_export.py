"""ONNX export (attnmt.export): the exported encoder and step compute what the PyTorch model computes,
translations through onnxruntime equal the PyTorch ones, and translating an exported model never
imports torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime (pip install 'attnmt[onnx]')")

from attnmt.data.vocab import EOS_ID, PAD_ID  # noqa: E402
from attnmt.errors import CheckpointError, ConfigError  # noqa: E402
from attnmt.export.graphs import export_onnx  # noqa: E402
from attnmt.export.onnx_model import ENCODER_FILE, STEP_FILE, OnnxModel, OnnxTranslator  # noqa: E402

pytest_plugins = ["serve_fixtures"]
from attnmt.store import (WEIGHTS_FILE, build_model, copy_model_files, load_config_file, load_model,  # noqa: E402
                          load_tokenizers, save_weights)
from attnmt.translator import Translator  # noqa: E402
from toy import assert_batch_size_changes_no_translation  # noqa: E402

TEXTS = ["one two three", "five", "six seven eight nine ten one", "", "ten ten ten ten"]


def random_model_dir(root: Path, toy_model_dir: Path, seed: int, **model_settings) -> Path:
    """A model directory with the toy model's tokenizers and a randomly initialised model of these settings."""
    config = load_config_file(toy_model_dir)
    config.model = dataclasses.replace(config.model, **model_settings)
    src_tokenizer, trg_tokenizer = load_tokenizers(toy_model_dir, config.vocab.joint)
    torch.manual_seed(seed)
    model = build_model(config, src_tokenizer, trg_tokenizer)
    for parameter in model.parameters():  # larger than the init, so that attention is far from uniform
        parameter.data.normal_(0, 0.5)
    copy_model_files(toy_model_dir, root, config)
    save_weights(model, root / WEIGHTS_FILE)
    return root


@pytest.mark.parametrize("settings", [
    {"attention": "general", "input_feeding": True},
    {"attention": "additive", "input_feeding": False, "encoder_layers": 2, "decoder_layers": 2},
    {"attention": "dot", "input_feeding": True, "encoder_hidden_size": 16, "hidden_size": 32},
    {"attention": "none", "input_feeding": False},
])
def test_the_onnx_encoder_and_step_compute_the_torch_ones_within_1e_4(toy_model_dir, tmp_path, settings):
    """Random weights, a random padded batch of different lengths, four steps from random tokens:
    log-probabilities, attention and the next state agree within 1e-4."""
    model_dir = random_model_dir(tmp_path / "model", toy_model_dir, seed=3, **settings)
    export_onnx(model_dir, tmp_path / "onnx")
    _, model, _, _ = load_model(model_dir)
    onnx_model = OnnxModel(tmp_path / "onnx")
    rng = np.random.default_rng(0)
    src_vocab, trg_vocab = model.encoder.embedding.num_embeddings, model.decoder.embedding.num_embeddings
    lengths = np.array([7, 1, 4, 6], dtype=np.int64)  # EOS included
    src = np.full((4, 7), PAD_ID, dtype=np.int64)
    for row, length in enumerate(lengths):
        src[row, : length - 1] = rng.integers(4, src_vocab, length - 1)
        src[row, length - 1] = EOS_ID
    with torch.inference_mode():
        memory, state = model.eval().encode(torch.from_numpy(src), torch.from_numpy(lengths))
        onnx_memory, onnx_state = onnx_model.encode(src, lengths)
        np.testing.assert_allclose(onnx_memory.states, memory.states.numpy(), atol=1e-4)
        np.testing.assert_allclose(onnx_state.hidden, state.hidden.numpy(), atol=1e-4)
        for _ in range(4):
            tokens = rng.integers(4, trg_vocab, 4)
            log_probs, state, attention = model.step(torch.from_numpy(tokens), state, memory)
            onnx_log_probs, onnx_state, onnx_attention = onnx_model.step(tokens, onnx_state, onnx_memory)
            np.testing.assert_allclose(onnx_log_probs, log_probs.numpy(), atol=1e-4)
            np.testing.assert_allclose(onnx_state.hidden, state.hidden.numpy(), atol=1e-4)
            if settings["input_feeding"]:
                np.testing.assert_allclose(onnx_state.attentional, state.attentional.numpy(), atol=1e-4)
            if settings["attention"] == "none":
                assert attention is None and onnx_attention is None
            else:
                np.testing.assert_allclose(onnx_attention, attention.numpy(), atol=1e-4)
                assert np.all(onnx_attention[src == PAD_ID] == 0)  # nothing on padding


@pytest.fixture(scope="module")
def onnx_dir(toy_model_dir, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("onnx") / "toy_onnx"
    export_onnx(toy_model_dir, directory)
    return directory


@pytest.mark.parametrize("beam", [1, 3])
def test_onnx_translations_equal_the_torch_ones(toy_model_dir, onnx_dir, beam):
    """Greedy and beam search through onnxruntime: the same texts, pieces, scores and attention."""
    torch_translations = Translator.load(toy_model_dir).translate(TEXTS, beam=beam)
    onnx_translations = OnnxTranslator.load(onnx_dir).translate(TEXTS, beam=beam)
    assert [t.text for t in onnx_translations] == [t.text for t in torch_translations]
    assert "eins zwei drei" == onnx_translations[0].text  # and the toy model translates
    for ours, theirs in zip(onnx_translations, torch_translations):
        assert ours.tokens == theirs.tokens and ours.src_tokens == theirs.src_tokens
        assert ours.score == pytest.approx(theirs.score, abs=1e-4)
        assert ours.attention.shape == theirs.attention.shape
        np.testing.assert_allclose(ours.attention, theirs.attention, atol=1e-4)


def test_an_exported_model_searching_two_sentences_at_a_time_translates_as_one_batch(onnx_dir):
    """Continuous batching on numpy arrays: the ONNX decoder's states are joined as torch's are."""
    assert_batch_size_changes_no_translation(OnnxTranslator.load(onnx_dir), TEXTS, 2)


def test_translating_an_exported_model_never_imports_torch(onnx_dir, tmp_path):
    """``attnmt translate DIR_ONNX`` in a fresh interpreter: the translations, torch absent from sys.modules."""
    (tmp_path / "in.txt").write_text("one two three\nfive six\n", encoding="utf-8")
    program = ("import sys\nfrom attnmt.cli import main\ncode = main(sys.argv[1:])\n"
               "print('torch imported' if 'torch' in sys.modules else 'no torch', code)")
    result = subprocess.run([sys.executable, "-c", program, "translate", str(onnx_dir), "-i", str(tmp_path / "in.txt"),
                             "-o", str(tmp_path / "out.txt"), "--beam", "3"], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "no torch 0", (result.stdout, result.stderr)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "eins zwei drei\nfünf sechs\n"


def test_what_needs_the_torch_model_is_refused_on_an_exported_one(onnx_dir, tmp_path):
    translator = OnnxTranslator.load(onnx_dir)
    with pytest.raises(ConfigError, match="needs the PyTorch model"):
        translator.translate(["one"], sampling=True)
    from attnmt.cli import main

    (tmp_path / "in.txt").write_text("one\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="only a PyTorch model directory supports --precision"):
        main(["translate", str(onnx_dir), "-i", str(tmp_path / "in.txt"), "--precision", "int8"])
    with pytest.raises(SystemExit, match="supports forced decoding"):
        main(["score", str(onnx_dir), "--src", str(tmp_path / "in.txt"), "--trg", str(tmp_path / "in.txt")])


def test_export_refuses_a_directory_it_cannot_read_with_the_reason(toy_model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="config.yaml is missing"):
        export_onnx(tmp_path / "nothing", tmp_path / "out")
    broken = tmp_path / "broken"
    copy_model_files(toy_model_dir, broken, load_config_file(toy_model_dir))
    with pytest.raises(CheckpointError, match="lacks its weights model.safetensors"):
        export_onnx(broken, tmp_path / "out")
    lstm = random_model_dir(tmp_path / "lstm", toy_model_dir, seed=0, rnn="lstm")
    with pytest.raises(ConfigError, match="supports GRU models"):
        export_onnx(lstm, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # a failed export leaves nothing
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(CheckpointError, match="exists and is not an empty directory"):
        export_onnx(toy_model_dir, tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_damaged_onnx_file_is_an_error_naming_it(onnx_dir, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in onnx_dir.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / STEP_FILE).write_bytes((onnx_dir / STEP_FILE).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"cannot load .*{STEP_FILE}"):
        OnnxTranslator.load(damaged)
    (damaged / ENCODER_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{ENCODER_FILE} is missing"):
        OnnxTranslator.load(damaged)


def test_a_real_server_serves_an_exported_model_as_it_serves_the_torch_one(toy_model_dir, onnx_dir):
    """uvicorn on loopback with the exported model: /v1/translate gives the PyTorch translations and
    attention, /v1/model the model's size; and building that service imports no torch."""
    httpx = pytest.importorskip("httpx")
    from attnmt.serve.app import create_app
    from serve_fixtures import LiveServer

    expected = Translator.load(toy_model_dir).translate(["one two three", "four five"], beam=3)
    with LiveServer(create_app(OnnxTranslator.load(onnx_dir), model_name="toy-onnx")) as server:
        body = httpx.post(f"{server.url}/v1/translate", json={"text": ["one two three", "four five"], "beam": 3,
                                                              "attention": True}, timeout=30).json()
        info = httpx.get(f"{server.url}/v1/model", timeout=30).json()
        refused = httpx.post(f"{server.url}/v1/translate", json={"text": "one two", "deletion_test": True}, timeout=30)
    assert refused.status_code == 422 and refused.json()["error"] == "deletion_test_unsupported"
    assert info["deletion_test"] is False  # the viewer then does not ask for it
    for result, translation in zip(body["results"], expected):
        [hypothesis] = result["translations"]
        assert hypothesis["text"] == translation.text and hypothesis["tokens"] == translation.tokens
        np.testing.assert_allclose(np.array(hypothesis["attention"]["pieces"]["weights"]), translation.attention, atol=2e-4)
    assert info["parameters"] == Translator.load(toy_model_dir).num_parameters > 0
    program = ("import sys\nfrom attnmt.serve.app import create_app\nfrom attnmt.export.onnx_model import OnnxTranslator\n"
               "create_app(OnnxTranslator.load(sys.argv[1]))\nprint('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", program, str(onnx_dir)], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "no torch", (result.stdout, result.stderr)
