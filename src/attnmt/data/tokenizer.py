"""SentencePiece subword tokenizers (unigram, BPE or characters) with the ids of ``vocab.py``.

Text is NFKC-normalised on the way in (SentencePiece's ``nmt_nfkc``), so compatibility characters
decode to their plain forms: full-width ``ｎ`` to ``n``, the ligature ``ﬁ`` to ``fi``.

Public API:
    SubwordTokenizer.train(texts, model_path, vocab_size, model_type="unigram", character_coverage=1.0,
                           byte_fallback=True, input_sentence_size=1_000_000, seed=42) -> SubwordTokenizer
    SubwordTokenizer.load(path) -> SubwordTokenizer
    Reservoir(size, seed): a sample of a stream of sentences to train on
    .encode(text) -> list[int]       .encode_batch(texts) -> list[list[int]]
    .pieces(text) -> list[str]       .decode(ids) -> str     .id_to_piece(id) -> str
    .vocab_size  .byte_fallback
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import sentencepiece as spm

from attnmt.data.vocab import BOS_ID, BOS_PIECE, EOS_ID, EOS_PIECE, PAD_ID, PAD_PIECE, UNK_ID, UNK_PIECE, WORD_START

ModelType = Literal["unigram", "bpe", "char"]

logger = logging.getLogger(__name__)

_SPECIAL_IDS = frozenset({PAD_ID, BOS_ID, EOS_ID})  # dropped by decode; UNK decodes to " ⁇ "
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)")


class SubwordTokenizer:
    """A SentencePiece model: text <-> ids, with PAD/UNK/BOS/EOS = 0/1/2/3."""

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        self.processor = processor
        ids = {
            "pad": (processor.pad_id(), PAD_ID),
            "unk": (processor.unk_id(), UNK_ID),
            "bos": (processor.bos_id(), BOS_ID),
            "eos": (processor.eos_id(), EOS_ID),
        }
        wrong = [f"{name} id {found} (expected {wanted})" for name, (found, wanted) in ids.items() if found != wanted]
        if wrong:
            raise ValueError(f"SentencePiece model has the wrong special ids: {', '.join(wrong)}")
        self._word_starts: np.ndarray | None = None  # per id: the piece begins a word (word_of_pieces)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        model_path: Path | str | None,
        vocab_size: int,
        model_type: ModelType = "unigram",
        character_coverage: float = 1.0,
        byte_fallback: bool = True,
        input_sentence_size: int = 1_000_000,
        seed: int = 42,
    ) -> "SubwordTokenizer":
        """Train on in-memory text (for a corpus of any size, a ``Reservoir`` sample of it) and write the
        model to ``model_path`` (e.g. ``dir/src.spm.model``; None: write nothing, see ``serialized``).

        ``vocab_size`` is an upper bound: small data gives a smaller vocabulary, and a size too small
        for the characters (plus 256 byte pieces with ``byte_fallback``) is raised to the minimum.
        At most ``input_sentence_size`` sentences, sampled with ``seed``, are used. ``byte_fallback`` spells
        unseen characters as UTF-8 bytes instead of ``<unk>``; character models ignore it.
        """
        if model_type not in ("unigram", "bpe", "char"):
            raise ValueError(f"model_type must be unigram, bpe or char, got {model_type!r}")
        if input_sentence_size <= 0:
            raise ValueError(f"input_sentence_size must be positive, got {input_sentence_size}")
        sample = Reservoir(input_sentence_size, seed)
        for text in texts:
            if text and not text.isspace():
                sample.add(text)
        sentences = sample.items
        if not sentences:
            raise ValueError("cannot train a tokenizer on no text")
        options = dict(
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback and model_type != "char",
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece=PAD_PIECE, unk_piece=UNK_PIECE, bos_piece=BOS_PIECE, eos_piece=EOS_PIECE,
            input_sentence_size=0,  # sampled above: SentencePiece's own sampler needs more than 100
            num_threads=os.cpu_count() or 1,
            minloglevel=2,  # errors only
        )
        try:
            proto = _train_proto(sentences, seed, options)
        except RuntimeError as err:
            match = _TOO_SMALL.search(str(err))
            if not match:
                raise
            minimum = int(match.group(1))
            logger.info("vocab_size %d is too small for the characters in the text; using %d", vocab_size, minimum)
            proto = _train_proto(sentences, seed, {**options, "vocab_size": minimum})
        if model_path is not None:
            Path(model_path).parent.mkdir(parents=True, exist_ok=True)
            Path(model_path).write_bytes(proto)
        return cls(spm.SentencePieceProcessor(model_proto=proto))

    @classmethod
    def load(cls, path: Path | str) -> "SubwordTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        return cls(spm.SentencePieceProcessor(model_file=str(path)))

    def word_of_pieces(self, ids: Sequence[int]) -> "np.ndarray":
        """The word (0, 1, ...) that each piece of an encoded text belongs to: a piece that begins
        with "▁" begins a word, the others continue the one before; (len(ids),) int."""
        if self._word_starts is None:
            self._word_starts = np.array([self.processor.id_to_piece(i).startswith(WORD_START)
                                          for i in range(self.vocab_size)])
        starts = self._word_starts[np.asarray(ids, dtype=np.int64)]
        return np.maximum(np.cumsum(starts) - 1, 0)

    @property
    def serialized(self) -> bytes:
        """The model as the bytes of a ``.model`` file."""
        return self.processor.serialized_model_proto()

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def byte_fallback(self) -> bool:
        """Whether unseen characters are spelled as UTF-8 bytes: the model has byte pieces, which
        SentencePiece puts right after the special ones."""
        return self.vocab_size > EOS_ID + 1 and self.processor.is_byte(EOS_ID + 1)

    def encode(self, text: str) -> list[int]:
        """Subword ids of one text, without BOS or EOS."""
        return self.processor.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts at once, on all cores."""
        return self.processor.encode(list(texts), out_type=int)

    def pieces(self, text: str) -> list[str]:
        return self.processor.encode(text, out_type=str)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; PAD, BOS and EOS are ignored."""
        return self.processor.decode([int(i) for i in ids if int(i) not in _SPECIAL_IDS])

    def id_to_piece(self, token_id: int) -> str:
        return self.processor.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        """The id of a piece (``<unk>``'s for a piece not in the vocabulary)."""
        return self.processor.piece_to_id(piece)

    def __len__(self) -> int:
        return self.vocab_size


def _train_proto(sentences: list[str], seed: int, options: dict) -> bytes:
    spm.set_random_generator_seed(seed)  # the sentence sample (process-wide SentencePiece state)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, **options)
    return model.getvalue()


class Reservoir:
    """A uniform random sample of at most ``size`` items from a stream of unknown length, in
    memory that does not grow with the stream (Vitter's algorithm R). While the stream is shorter
    than ``size``, the sample is the whole stream, in order."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.items: list[str] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: str) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item

