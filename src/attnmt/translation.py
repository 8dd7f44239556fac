"""Text in, text out, over any model of the step protocol: what the PyTorch translator
(attnmt.translator) and the ONNX one (attnmt.export.onnx_model) share, without importing torch.

``TextTranslator`` cleans and tokenizes, hands token ids to attnmt.decoding, and detokenizes what
comes back into ``Translation``s: text, target pieces, score and attention matrix (one row per target
piece plus the final ``</s>``, one column per source piece plus the source ``</s>``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from attnmt.config import Config, DecodeConfig
from attnmt.data.corpus import chunks
from attnmt.data.text import clean_line
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.data.vocab import EOS_PIECE, UNK_ID, WORD_START
from attnmt.decoding import ArrayMaker, decode_long_inputs, with_search
from attnmt.errors import ConfigError, NoAttentionError
from attnmt.explain.alignment import WordAlignment, word_attention
from attnmt.explain.diagnostics import Diagnostics, diagnose
from attnmt.search import Hypothesis, StepModel, model_has_attention

logger = logging.getLogger(__name__)

CHUNK_BATCHES = 64  # decoding batches of texts read at a time when translating a stream


@dataclass
class Translation:
    text: str  # detokenized output
    tokens: list[str]  # target pieces, without </s>
    src_tokens: list[str]  # source pieces, without </s>
    score: float  # the search's ranking score (length-normalised log-probability, plus any coverage penalty)
    log_prob: float
    attention: np.ndarray | None = field(repr=False)  # (len(tokens)+1, len(src_tokens)+1), rows incl. </s>;
    # None for a model without attention

    @property
    def attention_labels(self) -> tuple[list[str], list[str]]:
        """(source labels, target labels) for the attention matrix, ``</s>`` included."""
        return self.src_tokens + [EOS_PIECE], self.tokens + [EOS_PIECE]

    @property
    def diagnostics(self) -> Diagnostics:
        """What the attention says about this translation: source words it may have left out or
        translated twice, how spread each target word's attention is (attnmt.explain.diagnostics).
        Raises NoAttentionError for a model without attention."""
        return diagnose(self)

    def word_alignment(self) -> WordAlignment:
        """The translation aligned to its source word by word, from the attention of the search
        (words found by SentencePiece's "▁"; see attnmt.explain.alignment)."""
        if self.attention is None:
            raise NoAttentionError("this translation comes from a model without attention (model.attention: none)")
        words, src_words, trg_words = word_attention(self)
        return WordAlignment.from_attention(words, src_words[:-1], trg_words[:-1])  # labels without </s>


class TextTranslator:
    """A model of the step protocol with its tokenizers, ready to translate text. Subclasses say how
    the model takes its inputs (``as_input``) and may wrap decoding (``_decode``)."""

    def __init__(self, model: StepModel, config: Config, src_tokenizer: SubwordTokenizer,
                 trg_tokenizer: SubwordTokenizer, as_input: ArrayMaker = np.asarray) -> None:
        self.model = model
        self.config = config
        self.src_tokenizer = src_tokenizer
        self.trg_tokenizer = trg_tokenizer
        self.as_input = as_input

    @property
    def attention_source(self) -> str:
        """Whose attention the translations show."""
        return "the model's attention"

    @property
    def has_attention(self) -> bool:
        return model_has_attention(self.model)

    def translate(
        self, texts: Sequence[str], beam: int | None = None, length_penalty: float | None = None, **search: Any
    ) -> list[Translation]:
        """One translation per input text, in order. An empty (or blank) text gives an empty translation.
        ``search``: other decode settings for this call (``sampling=True, temperature=0.8``, ...)."""
        return [n_best[0] for n_best in self.translate_n_best(texts, beam=beam, n_best=1, length_penalty=length_penalty,
                                                                 **search)]

    def translate_n_best(
        self, texts: Sequence[str], beam: int | None = None, n_best: int | None = None,
        length_penalty: float | None = None, **search: Any,
    ) -> list[list[Translation]]:
        """The ``n_best`` best translations of each text, best first (defaults: the config's
        ``decode.beam_size`` and ``decode.n_best``); with ``sampling=True``, ``n_best`` samples of each
        in the order drawn (``temperature``, ``top_k``, ``top_p`` and ``seed`` as in DecodeConfig).

        A text longer than ``decode.max_input_tokens`` source tokens (default ``data.max_src_tokens``,
        what the model was trained on) is translated in pieces cut at sentence or word boundaries."""
        decode = self.search_settings(beam, n_best, length_penalty, **search)
        return self._translate(texts, decode, self._sampling_generator(decode) if decode.sampling else None)

    def _translate(self, texts: Sequence[str], decode: DecodeConfig, generator: Any = None) -> list[list[Translation]]:
        """``translate_n_best`` with its settings worked out; ``generator``: what sampling draws from."""
        cleaned = [clean_line(text) for text in texts]
        wanted = [i for i, text in enumerate(cleaned) if text]
        src_ids = self.src_tokenizer.encode_batch([cleaned[i] for i in wanted])
        found, n_cut = self._decode(src_ids, decode, generator)
        if n_cut:
            logger.warning("%d input lines longer than %d source tokens were translated in pieces",
                           n_cut, self.max_input_tokens)
        results: list[list[Translation]] = [[_empty_translation(self.has_attention)] for _ in texts]
        for i, ids, hypotheses in zip(wanted, src_ids, found):
            src_pieces = [self.src_tokenizer.id_to_piece(t) for t in ids]
            results[i] = [self._to_translation(h, src_pieces, cleaned[i]) for h in hypotheses[:decode.n_best]]
        return results

    def _decode(self, src_ids: list[list[int]], decode: DecodeConfig, generator: Any,
                ) -> tuple[list[list[Hypothesis]], int]:
        """The hypotheses of each tokenized text and how many texts were cut (decode_long_inputs)."""
        return decode_long_inputs(self.model, src_ids, self.src_tokenizer.id_to_piece, decode, self.max_input_tokens,
                                  self.as_input, generator)

    def _sampling_generator(self, decode: DecodeConfig) -> Any:
        """The random generator sampling with ``decode`` draws from (PyTorch models only)."""
        raise ConfigError("sampling draws with PyTorch's random generator: it needs the PyTorch model, "
                          "not an exported one")

    def translate_chunks(
        self, texts: Iterable[str], beam: int | None = None, n_best: int | None = None,
        length_penalty: float | None = None, chunk_size: int | None = None, **search: Any,
    ) -> Iterator[list[list[Translation]]]:
        """``translate_n_best`` over an iterable of any length (a file read line by line), a chunk of
        ``chunk_size`` texts at a time (default ``CHUNK_BATCHES`` decoding batches): each chunk's
        n-best lists in input order, as soon as the chunk is done. The texts of a chunk are sorted by
        length for decoding, as one call sorts all of its texts; memory does not grow with the input.
        Sampling draws from one generator for the whole stream (not one per chunk, which would draw
        the same numbers in every chunk): the same texts, seed, chunk and batch sizes give the same
        samples."""
        decode = self.search_settings(beam, n_best, length_penalty, **search)
        generator = self._sampling_generator(decode) if decode.sampling else None
        for chunk in chunks(texts, chunk_size or CHUNK_BATCHES * self.config.decode.batch_size):
            yield self._translate(chunk, decode, generator)

    def translate_stream(
        self, texts: Iterable[str], beam: int | None = None, n_best: int | None = None,
        length_penalty: float | None = None, chunk_size: int | None = None, **search: Any,
    ) -> Iterator[list[Translation]]:
        """The n-best list of each text of an iterable of any length, in order (``translate_chunks``,
        one text at a time)."""
        for chunk in self.translate_chunks(texts, beam, n_best, length_penalty, chunk_size, **search):
            yield from chunk

    @property
    def max_input_tokens(self) -> int:
        """Inputs longer than this (in source tokens) are translated in pieces."""
        return self.config.decode.max_input_tokens or self.config.data.max_src_tokens

    def search_settings(self, beam: int | None = None, n_best: int | None = None,
                        length_penalty: float | None = None, **search: Any) -> DecodeConfig:
        """The decode settings a call with these arguments uses: the config's, with those given (not
        None) replaced; the config's n-best is capped at the beam size (when searching: samples are
        as many as asked). ConfigError (a ValueError) if they do not fit."""
        unknown = sorted(set(search) - {f.name for f in dataclasses.fields(DecodeConfig)})
        if unknown:
            raise TypeError(f"unknown decode settings: {', '.join(unknown)}")
        decode = with_search(self.config.decode, beam_size=beam, length_penalty=length_penalty, **search)
        if n_best is None and not decode.sampling:
            n_best = min(decode.n_best, decode.beam_size)
        decode = with_search(decode, n_best=n_best).check()
        if decode.coverage_penalty and not self.has_attention:
            raise ConfigError("the coverage penalty needs attention: this model has none (model.attention: none)")
        return decode

    def _to_translation(self, hypothesis: Hypothesis, src_pieces: list[str], source_text: str = "") -> Translation:
        return Translation(
            text=self._detokenize(hypothesis, source_text),
            tokens=[self.trg_tokenizer.id_to_piece(t) for t in hypothesis.tokens],
            src_tokens=src_pieces,
            score=float(hypothesis.score),
            log_prob=float(hypothesis.log_prob),
            attention=hypothesis.attention,
        )

    def _detokenize(self, hypothesis: Hypothesis, source_text: str) -> str:
        """The output text, always one line. An ``<unk>`` the model wrote becomes the source piece it
        attended to most (Luong et al., 2015): unknown names, numbers and symbols come through. Without
        attention an ``<unk>`` stays."""
        tokens = hypothesis.tokens
        replace_unk = UNK_ID in tokens and hypothesis.attention is not None
        surfaces = self.src_tokenizer.pieces(source_text) if replace_unk else []  # an <unk> as its characters
        if not surfaces:
            return clean_line(self.trg_tokenizer.decode(tokens))
        attention = hypothesis.attention[:, : len(surfaces)]  # (len(tokens)+1, src_len) without </s>
        pieces = []
        for row, token in enumerate(tokens):
            if token == UNK_ID:
                surface = surfaces[int(attention[row].argmax())]
                pieces.append(" " + surface[1:] if surface.startswith(WORD_START) else surface)
            else:
                pieces.append(self.trg_tokenizer.id_to_piece(token))
        return clean_line(self.trg_tokenizer.processor.decode_pieces(pieces))


def _empty_translation(has_attention: bool) -> Translation:
    return Translation("", [], [], 0.0, 0.0, np.zeros((0, 0), dtype=np.float32) if has_attention else None)
