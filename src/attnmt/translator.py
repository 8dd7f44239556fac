"""The public Python API: ``Translator.load(model_dir).translate(["..."], beam=5)``.

Each translation carries its text, its target pieces, its score and its attention matrix (one row per
target piece plus the final ``</s>``, one column per source piece plus the source ``</s>``), and gives
its word alignment. ``Translator.align(sources, targets)`` aligns given translations by forced
decoding. A model without attention (``model.attention: none``) translates as well, but its
translations carry no attention matrix (``attention`` is None) and it cannot align.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from attnmt.alignment import NoAttentionError, WordAlignment, merge_groups, merge_subwords
from attnmt.checkpoint import WEIGHTS_FILE, CheckpointError, load_config_file, load_weights, tokenizer_files
from attnmt.config import Config, DecodeConfig
from attnmt.data.batching import collate, sentence_batches
from attnmt.data.text import clean_line
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.data.vocab import EOS_PIECE, UNK_ID
from attnmt.device import autocast, check_inference_precision, quantize_int8
from attnmt.model import Seq2Seq
from attnmt.search import Hypothesis, beam_search, greedy_search
from attnmt.segment import WORD_START, join_n_best, split_points

logger = logging.getLogger(__name__)


@dataclass
class Translation:
    text: str  # detokenized output
    tokens: list[str]  # target pieces, without </s>
    src_tokens: list[str]  # source pieces, without </s>
    score: float  # the search's ranking score (length-normalised log-probability)
    log_prob: float
    attention: np.ndarray | None = field(repr=False)  # (len(tokens)+1, len(src_tokens)+1), rows incl. </s>;
    # None for a model without attention

    @property
    def attention_labels(self) -> tuple[list[str], list[str]]:
        """(source labels, target labels) for the attention matrix, ``</s>`` included."""
        return self.src_tokens + [EOS_PIECE], self.tokens + [EOS_PIECE]

    def word_alignment(self) -> WordAlignment:
        """The translation aligned to its source word by word, from the attention of the search
        (words found by SentencePiece's "▁"; see attnmt.alignment)."""
        if self.attention is None:
            raise NoAttentionError("this translation comes from a model without attention (model.attention: none)")
        words, src_words, trg_words = merge_subwords(self.attention, *self.attention_labels)
        return WordAlignment.from_attention(words, src_words[:-1], trg_words[:-1])  # labels without </s>


def max_target_lengths(src_lengths: torch.Tensor, decode: DecodeConfig) -> torch.Tensor:
    """Longest allowed output per sentence: ratio * source length + extra tokens."""
    return (src_lengths.double() * decode.max_length_ratio).ceil().long() + decode.max_length_extra


@torch.inference_mode()
def decode_ids(
    model: Seq2Seq,
    src_ids: Sequence[list[int]],
    decode: DecodeConfig,
    beam_size: int,
    n_best: int = 1,
    device: torch.device | str = "cpu",
) -> list[list[Hypothesis]]:
    """Search over many tokenized sentences in length-sorted batches; results in input order.
    An empty sentence is still decoded (from its lone ``</s>``): callers decide what empty input means."""
    model.eval()
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for indices in sentence_batches([len(ids) for ids in src_ids], decode.batch_size):
        batch = collate([src_ids[i] for i in indices], None, indices)
        src, src_lengths = batch.src.to(device), batch.src_lengths.to(device)
        max_lengths = max_target_lengths(src_lengths, decode)
        if beam_size <= 1:
            found = greedy_search(model, src, src_lengths, max_lengths)
        else:
            found = beam_search(
                model, src, src_lengths, max_lengths, beam_size, n_best=n_best, length_penalty=decode.length_penalty
            )
        for position, hypotheses in zip(batch.indices, found):
            results[position] = hypotheses
    return results


@torch.inference_mode()
def forced_attention(
    model: Seq2Seq,
    src_ids: Sequence[list[int]],
    trg_ids: Sequence[list[int]],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Forced decoding: the model reads each source and is fed its given target, as in training but
    without dropout. Returns per pair the attention it computed on the way, (len(trg)+1, len(src)+1)
    with the ``</s>`` row and column, in input order."""
    if not model.has_attention:
        raise NoAttentionError("the model has no attention (model.attention: none): it cannot align words")
    model.eval()
    results: list[np.ndarray] = [np.zeros(0)] * len(src_ids)
    for indices in sentence_batches([len(ids) for ids in src_ids], batch_size):
        batch = collate([src_ids[i] for i in indices], [trg_ids[i] for i in indices], indices).to(device)
        _, attention = model(batch.src, batch.src_lengths, batch.trg_input)  # (batch, trg_len, src_len)
        attention = attention.float().cpu().numpy()
        for row, position in enumerate(batch.indices):
            results[position] = attention[row, : len(trg_ids[position]) + 1, : len(src_ids[position]) + 1]
    return results


class Translator:
    """A trained model with its tokenizers, ready to translate text."""

    def __init__(
        self,
        model: Seq2Seq,
        config: Config,
        src_tokenizer: SubwordTokenizer,
        trg_tokenizer: SubwordTokenizer,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
    ) -> None:
        """precision: ``fp32``; ``bf16``, matrix products under bfloat16 autocast; or ``int8``, weights of
        the linear and recurrent layers quantized (CPU only). See docs/performance.md for their speed
        and BLEU."""
        self.device = torch.device(device)
        check_inference_precision(precision, self.device)
        model = model.to(self.device).eval()
        self.model = quantize_int8(model) if precision == "int8" else model
        self.precision = precision
        self.config = config
        self.src_tokenizer = src_tokenizer
        self.trg_tokenizer = trg_tokenizer

    @classmethod
    def load(cls, model_dir: Path | str, device: torch.device | str = "cpu", precision: str = "fp32") -> "Translator":
        """Load a model directory (safetensors + YAML + SentencePiece; never a pickle)."""
        model_dir = Path(model_dir)
        config = load_config_file(model_dir)
        src_path, trg_path = tokenizer_files(model_dir, config.vocab.joint)
        for path in {src_path, trg_path}:
            if not path.exists():
                raise CheckpointError(f"{model_dir} lacks its tokenizer model {path.name}")
        src_tokenizer = _load_tokenizer(src_path)
        trg_tokenizer = src_tokenizer if trg_path == src_path else _load_tokenizer(trg_path)
        model = Seq2Seq.from_config(config.model, src_tokenizer.vocab_size, trg_tokenizer.vocab_size)
        weights = model_dir / WEIGHTS_FILE
        if not weights.exists():
            raise CheckpointError(f"{model_dir} lacks its weights {WEIGHTS_FILE}")
        load_weights(model, weights)
        return cls(model, config, src_tokenizer, trg_tokenizer, device, precision)

    def translate(
        self, texts: Sequence[str], beam: int | None = None, length_penalty: float | None = None
    ) -> list[Translation]:
        """One translation per input text, in order. An empty (or blank) text gives an empty translation."""
        return [n_best[0] for n_best in self.translate_n_best(texts, beam=beam, n_best=1, length_penalty=length_penalty)]

    def translate_n_best(
        self, texts: Sequence[str], beam: int | None = None, n_best: int = 1, length_penalty: float | None = None
    ) -> list[list[Translation]]:
        """The ``n_best`` best translations of each text, best first.

        A text longer than ``decode.max_input_tokens`` source tokens (default ``data.max_src_tokens``,
        what the model was trained on) is translated in pieces cut at sentence or word boundaries."""
        beam_size = self.config.decode.beam_size if beam is None else beam
        if beam_size < 1:
            raise ValueError(f"beam must be >= 1, got {beam_size}")
        if n_best < 1 or n_best > max(beam_size, 1):
            raise ValueError(f"n_best must be between 1 and the beam size ({beam_size}), got {n_best}")
        decode = self.config.decode
        if length_penalty is not None:
            decode = DecodeConfig(**{**decode.__dict__, "length_penalty": length_penalty})
        cleaned = [clean_line(text) for text in texts]
        src_ids = self.src_tokenizer.encode_batch(cleaned)
        wanted = [i for i, text in enumerate(cleaned) if text]
        spans = [(i, start, end) for i in wanted for start, end in self._input_spans(src_ids[i], decode)]
        with autocast(self.precision, self.device):
            found = decode_ids(self.model, [src_ids[i][start:end] for i, start, end in spans], decode, beam_size,
                               n_best, self.device)
        parts: dict[int, list[list[Hypothesis]]] = {}
        for (i, _, _), hypotheses in zip(spans, found):
            parts.setdefault(i, []).append(hypotheses)
        if len(spans) > len(wanted):
            logger.warning("%d input lines longer than %d source tokens were translated in pieces",
                           sum(len(p) > 1 for p in parts.values()), self._max_input_tokens(decode))
        results: list[list[Translation]] = [[_empty_translation(self.model.has_attention)] for _ in texts]
        for i, line_parts in parts.items():
            src_pieces = [self.src_tokenizer.id_to_piece(t) for t in src_ids[i]]
            hypotheses = line_parts[0] if len(line_parts) == 1 else join_n_best(line_parts, n_best)
            results[i] = [self._to_translation(h, src_pieces, cleaned[i]) for h in hypotheses[:n_best]]
        return results

    def align(self, sources: Sequence[str], targets: Sequence[str]) -> list[WordAlignment]:
        """Word alignments of given translations (``targets[i]`` of ``sources[i]``) by forced decoding.

        Words are the whitespace-separated tokens of each text, as in gold alignment files; each word
        is encoded on its own (SentencePiece splits at whitespace before segmenting, so the pieces are
        those of the whole sentence) and its pieces' attention merged. Raises NoAttentionError for a
        model without attention."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: they must pair up one to one")
        src_words = [source.split() for source in sources]
        trg_words = [target.split() for target in targets]
        src_pieces = [self.src_tokenizer.encode_batch([clean_line(w) for w in words]) for words in src_words]
        trg_pieces = [self.trg_tokenizer.encode_batch([clean_line(w) for w in words]) for words in trg_words]
        with autocast(self.precision, self.device):
            attention = forced_attention(self.model, [_concat(p) for p in src_pieces],
                                         [_concat(p) for p in trg_pieces], self.config.decode.batch_size, self.device)
        alignments = []
        for matrix, src, trg, src_ids, trg_ids in zip(attention, src_words, trg_words, src_pieces, trg_pieces):
            words = merge_groups(matrix, _piece_groups(src_ids), _piece_groups(trg_ids))  # (trg+1, src+1)
            alignments.append(WordAlignment.from_attention(words, src, trg))
        return alignments

    def _max_input_tokens(self, decode: DecodeConfig) -> int:
        return decode.max_input_tokens or self.config.data.max_src_tokens

    def _input_spans(self, ids: list[int], decode: DecodeConfig) -> list[tuple[int, int]]:
        """Where to cut a tokenized input into pieces the model can translate (one span if it fits)."""
        limit = self._max_input_tokens(decode)
        if len(ids) <= limit:
            return [(0, len(ids))]
        return split_points([self.src_tokenizer.id_to_piece(t) for t in ids], limit)

    def _to_translation(self, hypothesis: Hypothesis, src_pieces: list[str], source_text: str = "") -> Translation:
        return Translation(
            text=self._detokenize(hypothesis, source_text),
            tokens=[self.trg_tokenizer.id_to_piece(t) for t in hypothesis.tokens],
            src_tokens=src_pieces,
            score=float(hypothesis.score),
            log_prob=float(hypothesis.log_prob),
            attention=None if hypothesis.attention is None else hypothesis.attention.float().cpu().numpy(),
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


def _load_tokenizer(path: Path) -> SubwordTokenizer:
    try:
        return SubwordTokenizer.load(path)
    except (OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"cannot load the tokenizer model {path}: {error}") from None


def _empty_translation(has_attention: bool) -> Translation:
    return Translation("", [], [], 0.0, 0.0, np.zeros((0, 0), dtype=np.float32) if has_attention else None)


def _concat(word_ids: list[list[int]]) -> list[int]:
    return [token for ids in word_ids for token in ids]


def _piece_groups(word_ids: list[list[int]]) -> list[list[int]]:
    """Indices of each word's pieces in the concatenated ids, then the ``</s>`` that collate appends."""
    groups, start = [], 0
    for ids in word_ids:
        groups.append(list(range(start, start + len(ids))))
        start += len(ids)
    return groups + [[start]]

