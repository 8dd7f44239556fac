"""attnmt.data.tokenizer: SentencePiece training, loading, encoding and decoding."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.data.vocab import BOS_ID, BOS_PIECE, EOS_ID, EOS_PIECE, PAD_ID, PAD_PIECE, UNK_ID, UNK_PIECE

WORDS = (
    "a man woman child dog cat girl boy is are sitting running playing walking with the in on at "
    "red blue green big small street park water ball bike hat shirt while near two three people"
).split()


def make_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "." for _ in range(count)]


TEXTS = make_sentences(400)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spm")


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def subword(request: pytest.FixtureRequest, model_dir: Path) -> SubwordTokenizer:
    return SubwordTokenizer.train(TEXTS, model_dir / f"{request.param}.spm.model", 300, request.param)


def test_train_writes_a_loadable_model(subword: SubwordTokenizer, model_dir: Path) -> None:
    path = next(path for path in model_dir.glob("*.spm.model")
                if path.read_bytes() == subword.processor.serialized_model_proto())
    loaded = SubwordTokenizer.load(path)
    assert loaded.vocab_size == subword.vocab_size <= 300
    assert loaded.processor.serialized_model_proto() == subword.processor.serialized_model_proto()
    assert loaded.byte_fallback
    assert loaded.encode_batch(TEXTS[:20]) == subword.encode_batch(TEXTS[:20])


def test_special_ids_and_pieces(subword: SubwordTokenizer) -> None:
    pieces = {PAD_ID: PAD_PIECE, UNK_ID: UNK_PIECE, BOS_ID: BOS_PIECE, EOS_ID: EOS_PIECE}
    for token_id, piece in pieces.items():
        assert subword.id_to_piece(token_id) == piece
    ids = subword.encode(TEXTS[0])
    assert not set(ids) & set(pieces)  # no BOS/EOS added, nothing unknown


def test_round_trip(subword: SubwordTokenizer) -> None:
    texts = TEXTS[:50] + ["Two dogs, three cats; 42 balls!"]
    assert [subword.decode(ids) for ids in subword.encode_batch(texts)] == texts
    assert subword.encode_batch(texts) == [subword.encode(text) for text in texts]
    assert "".join(subword.pieces(TEXTS[1])).replace("▁", " ").strip() == TEXTS[1]


def test_decode_ignores_special_ids(subword: SubwordTokenizer) -> None:
    ids = subword.encode(TEXTS[2])
    assert subword.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == TEXTS[2]


UNSEEN = ["Ein Kätzchen 猫 spielt 😀.", "Ωμέγα नमस्ते 👨\u200d👩\u200d👧"]  # characters absent from TEXTS


@pytest.mark.parametrize("text", UNSEEN)
def test_byte_fallback_keeps_unseen_characters(subword: SubwordTokenizer, text: str) -> None:
    ids = subword.encode(text)
    assert UNK_ID not in ids
    assert any(piece.startswith("<0x") for piece in subword.pieces(text))
    assert subword.decode(ids) == text


def test_text_is_nfkc_normalised(subword: SubwordTokenizer) -> None:
    assert subword.decode(subword.encode("𝔘ｎｉ ﬁne")) == "Uni fine"


def test_without_byte_fallback_unseen_is_unknown(model_dir: Path) -> None:
    tokenizer = SubwordTokenizer.train(TEXTS, model_dir / "plain.model", 200, "bpe", byte_fallback=False)
    assert not tokenizer.byte_fallback
    assert UNK_ID in tokenizer.encode("a 猫")


def test_char_model(model_dir: Path) -> None:
    tokenizer = SubwordTokenizer.train(TEXTS, model_dir / "char.model", 1000, "char")
    assert not tokenizer.byte_fallback
    assert tokenizer.vocab_size < 100  # the characters of the text, not 1000
    pieces = tokenizer.pieces("A big dog.")
    assert all(len(piece) == 1 for piece in pieces)
    assert tokenizer.decode(tokenizer.encode("A big dog.")) == "A big dog."


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_vocab_size_out_of_range_is_adjusted(model_dir: Path, model_type: str) -> None:
    large = SubwordTokenizer.train(TEXTS[:30], model_dir / "large.model", 50_000, model_type)
    assert large.vocab_size < 50_000
    small = SubwordTokenizer.train(TEXTS[:30], model_dir / "small.model", 10, model_type)
    assert small.vocab_size > 256  # room for the byte pieces and every character
    assert small.decode(small.encode(TEXTS[0])) == TEXTS[0]


def test_training_is_deterministic(model_dir: Path) -> None:
    texts = make_sentences(1000, seed=1)
    first = SubwordTokenizer.train(texts, model_dir / "first.model", 300, input_sentence_size=500, seed=7)
    second = SubwordTokenizer.train(texts, model_dir / "second.model", 300, input_sentence_size=500, seed=7)
    assert (model_dir / "first.model").read_bytes() == (model_dir / "second.model").read_bytes()
    assert first.encode_batch(texts[:10]) == second.encode_batch(texts[:10])


def test_errors(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="no text"):
        SubwordTokenizer.train(["", "  "], model_dir / "empty.model", 100)
    with pytest.raises(ValueError, match="model_type"):
        SubwordTokenizer.train(TEXTS, model_dir / "word.model", 100, "word")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SubwordTokenizer.load(model_dir / "missing.model")
