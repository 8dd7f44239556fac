"""Write an attnmt model as a Joey NMT 2.3 model directory, so that both toolkits decode the same weights.

    python benchmarks/joey_export.py MODEL_DIR OUT_DIR [--joey-config ../shared/peers/joeynmt/rnn_en_de.yaml]

Decoding speed depends on what a model writes: an undertrained model repeats itself up to the length
limit, a converged one stops after a sentence. Comparing two toolkits' decoders is fair only on the
same model; this script makes that possible. Joey NMT's recurrent model (``RecurrentEncoder`` and
``RecurrentDecoder`` with ``attention: luong``, ``init_hidden: bridge``, ``input_feeding``) computes what
attnmt's GRU model with ``attention: general`` computes, given:

- ``model.rnn: gru``, one encoder and one decoder layer, input feeding on;
- ``model.share_embeddings: true`` (Joey's ``tied_embeddings``), ``model.tie_output: false``
  (Joey's ``tied_softmax`` needs the decoder state to be embedding-sized) and ``model.output_bias: false``
  (Joey's output layer has no bias);
- a joint SentencePiece vocabulary.

The parameters map one to one, with three rearrangements: Joey's attentional layer reads
``[hₜ; cₜ]`` where attnmt's reads ``[cₜ; hₜ]`` (its columns are swapped), and has a bias (written as
zeros); Joey numbers ``<unk>`` 0 and ``<pad>`` 1, attnmt the other way round (rows 0 and 1 of the
embedding and output matrices are swapped). Joey's vocabulary file lists attnmt's pieces in id order,
and Joey tokenizes with attnmt's own SentencePiece model.

Writes OUT_DIR/best.ckpt (a plain ``torch.save`` dict, as Joey writes it), OUT_DIR/vocab.txt and
OUT_DIR/config.yaml: the peer's Joey config with the model's sizes, the vocabulary, the tokenizer and
``testing.load_model`` filled in. ``python -m joeynmt translate OUT_DIR/config.yaml`` then translates
with it (Joey loads the state dict strictly: a missing or misshapen parameter is an error there).
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
PEER_CONFIG = REPO.parent / "shared" / "peers" / "joeynmt" / "rnn_en_de.yaml"
JOEY_SPECIALS = {"unk_id": 0, "pad_id": 1, "bos_id": 2, "eos_id": 3}


class NotJoeyCompatible(ValueError):
    """The model has a part Joey NMT's recurrent model does not have."""


def check_compatible(config) -> None:
    """Raise NotJoeyCompatible naming every setting that Joey NMT cannot represent."""
    model = config.model
    wanted = {
        "model.rnn": (model.rnn, "gru"), "model.attention": (model.attention, "general"),
        "model.encoder_layers": (model.encoder_layers, 1), "model.decoder_layers": (model.decoder_layers, 1),
        "model.input_feeding": (model.input_feeding, True), "model.share_embeddings": (model.share_embeddings, True),
        "model.tie_output": (model.tie_output, False), "model.output_bias": (model.output_bias, False),
        "vocab.joint": (config.vocab.joint, True),
    }
    wrong = [f"{key} is {found!r}, Joey NMT needs {needed!r}" for key, (found, needed) in wanted.items() if found != needed]
    if wrong:
        raise NotJoeyCompatible("; ".join(wrong))


def joey_row_order(vocab_size: int) -> torch.Tensor:
    """attnmt's id of each Joey id: Joey puts <unk> at 0 and <pad> at 1, attnmt the reverse."""
    from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

    assert (UNK_ID, PAD_ID, BOS_ID, EOS_ID) == (1, 0, 2, 3), "attnmt's special ids changed: update the row order"
    order = torch.arange(vocab_size)
    order[0], order[1] = UNK_ID, PAD_ID
    return order


def joey_state_dict(model, memory_size: int) -> dict[str, torch.Tensor]:
    """attnmt ``Seq2Seq`` parameters under Joey NMT 2.3's names, rearranged as the module docstring says."""
    ours = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    rows = joey_row_order(ours["encoder.embedding.weight"].size(0))
    embedding = ours["encoder.embedding.weight"][rows]  # (vocab, emb), Joey's id order
    attentional = ours["decoder.attentional_layer.weight"]  # (hidden, memory + hidden): columns [cₜ; hₜ]
    state = {
        "src_embed.lut.weight": embedding,
        "trg_embed.lut.weight": embedding,  # tied_embeddings: one tensor under both names
        "decoder.output_layer.weight": ours["output_layer.weight"][rows],
        "decoder.att_vector_layer.weight": torch.cat([attentional[:, memory_size:], attentional[:, :memory_size]], 1),
        "decoder.att_vector_layer.bias": attentional.new_zeros(attentional.size(0)),
        "decoder.attention.key_layer.weight": ours["decoder.attention.key_projection.weight"],
        "decoder.bridge_layer.weight": ours["decoder.bridge.weight"],
        "decoder.bridge_layer.bias": ours["decoder.bridge.bias"],
    }
    for side in ("encoder", "decoder"):
        for name, tensor in ours.items():
            if name.startswith(f"{side}.rnn."):
                state[name] = tensor  # the same nn.GRU parameters, the same names
    return state


def joey_config(peer: dict, config, out_dir: Path, vocab_file: Path, spm_file: Path) -> dict:
    """The peer's Joey config, changed to describe this model and where its files are."""
    joey = copy.deepcopy(peer)
    joey["name"] = f"attnmt export of a {config.data.src_lang}-{config.data.trg_lang} model"
    joey["model_dir"] = str(out_dir)
    for side, lang in (("src", config.data.src_lang), ("trg", config.data.trg_lang)):
        joey["data"][side].update(lang=lang, voc_file=str(vocab_file), voc_limit=10**9, level="bpe",
                                  tokenizer_type="sentencepiece", lowercase=False, normalize=False)
        joey["data"][side]["tokenizer_cfg"] = {"model_file": str(spm_file), "pretokenizer": "none"}
    joey["data"]["special_symbols"].update(JOEY_SPECIALS)
    joey["testing"]["load_model"] = str(out_dir / "best.ckpt")
    m = config.model
    model = joey["model"]
    model.update(tied_embeddings=True, tied_softmax=False)
    model["encoder"].update(type="recurrent", rnn_type="gru", bidirectional=True, num_layers=1,
                            hidden_size=m.encoder_hidden_size, embeddings={"embedding_dim": m.embedding_size})
    model["decoder"].update(type="recurrent", rnn_type="gru", num_layers=1, hidden_size=m.hidden_size,
                            input_feeding=True, init_hidden="bridge", attention="luong",
                            embeddings={"embedding_dim": m.embedding_size})
    return joey


def export(model_dir: Path, out_dir: Path, peer_config: Path = PEER_CONFIG) -> Path:
    """Write the Joey NMT model directory; returns the path of its config.yaml."""
    from attnmt.translator import Translator

    model_dir, out_dir = model_dir.resolve(), out_dir.resolve()  # Joey runs in its own directory
    if not peer_config.is_file():
        raise FileNotFoundError(f"no Joey NMT config to start from at {peer_config}: pass --joey-config "
                                "with a Joey NMT 2.3 recurrent-model config")
    translator = Translator.load(model_dir)
    check_compatible(translator.config)
    tokenizer = translator.src_tokenizer
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    bad = [piece for piece in pieces if len(piece.splitlines()) != 1 or piece != piece.strip("\n")]
    if bad:
        raise NotJoeyCompatible(f"pieces Joey's one-piece-a-line vocabulary file cannot hold: {bad[:5]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, spm_file = out_dir / "vocab.txt", out_dir / "spm.model"
    vocab_file.write_text("".join(piece + "\n" for piece in pieces), encoding="utf-8")
    shutil.copyfile(model_dir / "spm.model", spm_file)
    memory_size = translator.model.encoder.output_size
    torch.save({"model_state": joey_state_dict(translator.model, memory_size), "steps": 0}, out_dir / "best.ckpt")
    peer = yaml.safe_load(peer_config.read_text())
    config_path = out_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(joey_config(peer, translator.config, out_dir, vocab_file, spm_file),
                                          sort_keys=False, allow_unicode=True))
    return config_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--joey-config", type=Path, default=PEER_CONFIG, help="the Joey config to start from")
    args = parser.parse_args()
    print(f"written {export(args.model_dir, args.out_dir, args.joey_config)}")


if __name__ == "__main__":
    main()
