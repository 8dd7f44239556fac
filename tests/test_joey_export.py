"""benchmarks/joey_export.py writes an attnmt model as a Joey NMT 2.3 model, so that the speed
benchmark can decode the same weights with both toolkits. Joey NMT is not installed here (the
benchmark runs it from its own venv and reports how many outputs agree); these tests check the
rearrangements against the equations of Joey's RecurrentDecoder and the files Joey reads."""

from dataclasses import replace

import pytest
import torch
import yaml

from attnmt.config import ModelConfig
from attnmt.data.vocab import PAD_ID, UNK_ID
from attnmt.model import Seq2Seq
from attnmt.training.loop import train
from test_benchmarks import load_script
from toy import toy_config, write_toy_corpus

JOEY_ARCHITECTURE = dict(rnn="gru", attention="general", input_feeding=True, share_embeddings=True,
                         tie_output=False, output_bias=False, dropout=0.0)


@pytest.fixture(scope="module")
def joey_export():
    return load_script("joey_export")


@pytest.fixture
def peer_config(tmp_path):
    """A Joey NMT 2.3 config of the shape of ../shared/peers/joeynmt/rnn_en_de.yaml (which a clean
    checkout does not have), with sizes and paths unlike the model's, which the export must replace."""
    side = dict(lang="xx", voc_file="/elsewhere/vocab", level="word", voc_limit=8000, lowercase=True,
                tokenizer_type="subword-nmt", tokenizer_cfg={"codes": "/elsewhere/codes"})
    size = dict(type="transformer", rnn_type="lstm", hidden_size=999, num_layers=2, embeddings={"embedding_dim": 999})
    config = {"name": "peer", "model_dir": "/elsewhere/model", "use_cuda": False,
              "data": {"src": dict(side), "trg": dict(side), "special_symbols": {"unk_token": "<unk>", "unk_id": 0}},
              "testing": {"beam_size": 5, "batch_size": 64, "max_output_length": 100},
              "training": {"optimizer": "adam"},
              "model": {"tied_embeddings": False, "tied_softmax": True,
                        "encoder": dict(size, bidirectional=False), "decoder": dict(size, attention="bahdanau")}}
    path = tmp_path / "peer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def joey_shaped_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("joey")
    config = toy_config(*write_toy_corpus(root / "data", n_train=200), max_steps=10, valid_every=10)
    config.vocab = replace(config.vocab, joint=True)
    config.model = replace(config.model, **JOEY_ARCHITECTURE)
    train(config, root / "model", progress=False, log=lambda message: None)
    return root / "model"


def test_models_joey_cannot_represent_are_refused_with_every_reason(joey_export, joey_shaped_model_dir):
    from attnmt.store import load_config_file

    config = load_config_file(joey_shaped_model_dir)
    joey_export.check_compatible(config)  # the Joey-shaped one passes
    config.model = replace(config.model, attention="additive", output_bias=True)
    with pytest.raises(joey_export.NotJoeyCompatible) as error:
        joey_export.check_compatible(config)
    assert "model.attention is 'additive'" in str(error.value) and "model.output_bias is True" in str(error.value)


def test_exported_vocabulary_gives_joey_the_ids_of_the_exported_rows(joey_export, joey_shaped_model_dir, peer_config,
                                                                     tmp_path):
    from attnmt.translator import Translator

    config_path = joey_export.export(joey_shaped_model_dir, tmp_path / "joey", peer_config)
    translator = Translator.load(joey_shaped_model_dir)
    lines = (tmp_path / "joey" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    # Joey's Vocabulary: its specials first (unk, pad, bos, eos), then the file's tokens not yet listed.
    joey_itos = ["<unk>", "<pad>", "<s>", "</s>"] + [t for t in lines if t not in ("<unk>", "<pad>", "<s>", "</s>")]
    assert len(joey_itos) == translator.src_tokenizer.vocab_size
    state = torch.load(tmp_path / "joey" / "best.ckpt")["model_state"]
    ours = translator.model.encoder.embedding.weight.detach()
    for joey_id, piece in enumerate(joey_itos):
        attnmt_id = translator.src_tokenizer.processor.piece_to_id(piece)
        torch.testing.assert_close(state["src_embed.lut.weight"][joey_id], ours[attnmt_id])
        torch.testing.assert_close(state["decoder.output_layer.weight"][joey_id],
                                   translator.model.output_layer.weight.detach()[attnmt_id])
    assert torch.all(state["src_embed.lut.weight"][1] == 0)  # Joey's <pad> row, attnmt's padding_idx row
    assert joey_itos[0] == translator.src_tokenizer.id_to_piece(UNK_ID)
    assert joey_itos[1] == translator.src_tokenizer.id_to_piece(PAD_ID)

    joey = yaml.safe_load(config_path.read_text())
    assert joey["testing"]["load_model"] == str(tmp_path / "joey" / "best.ckpt")
    assert joey["data"]["src"]["voc_file"] == joey["data"]["trg"]["voc_file"] == str(tmp_path / "joey" / "vocab.txt")
    assert joey["data"]["src"]["tokenizer_cfg"]["model_file"] == str(tmp_path / "joey" / "spm.model")
    model = translator.config.model
    assert joey["model"]["encoder"]["hidden_size"] == model.encoder_hidden_size
    assert joey["model"]["decoder"]["hidden_size"] == model.hidden_size
    assert joey["model"]["encoder"]["embeddings"]["embedding_dim"] == model.embedding_size
    assert joey["model"]["tied_embeddings"] is True and joey["model"]["tied_softmax"] is False
    for part in ("encoder", "decoder"):
        assert (joey["model"][part]["type"], joey["model"][part]["rnn_type"], joey["model"][part]["num_layers"]) == \
            ("recurrent", "gru", 1)
    assert joey["model"]["encoder"]["bidirectional"] is True and joey["model"]["decoder"]["attention"] == "luong"
    assert joey["data"]["src"]["lowercase"] is False and joey["data"]["src"]["level"] == "bpe"
    assert joey["data"]["special_symbols"]["pad_id"] == 1 and joey["testing"]["max_output_length"] == 100


def test_joey_attentional_layer_computes_ours(joey_export):
    """Joey: h̃ = tanh(W_joey [hₜ; cₜ] + b); attnmt: h̃ = tanh(W_c [cₜ; hₜ]). The same vector, for any input."""
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=8, encoder_hidden_size=6, hidden_size=10,
                                            **JOEY_ARCHITECTURE), 20, 20).eval()
    memory_size = model.encoder.output_size
    state = joey_export.joey_state_dict(model, memory_size)
    hidden, context = torch.randn(4, 10), torch.randn(4, memory_size)
    ours = torch.tanh(model.decoder.attentional_layer(torch.cat([context, hidden], dim=-1)))
    joey = torch.tanh(torch.cat([hidden, context], dim=-1) @ state["decoder.att_vector_layer.weight"].T
                      + state["decoder.att_vector_layer.bias"])
    torch.testing.assert_close(joey, ours)
    # Joey's Luong attention scores hₜ · key_layer(h̄ₛ): attnmt's general attention with the same W.
    torch.testing.assert_close(state["decoder.attention.key_layer.weight"], model.decoder.attention.key_projection.weight)
    assert {name for name in state if ".rnn." in name} == {name for name, _ in model.named_parameters() if ".rnn." in name}


def test_a_missing_joey_config_is_named(joey_export, joey_shaped_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="--joey-config"):
        joey_export.export(joey_shaped_model_dir, tmp_path / "joey", tmp_path / "absent.yaml")
