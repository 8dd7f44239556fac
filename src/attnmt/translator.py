"""The public Python API: ``Translator.load(model_dir).translate(["..."], beam=5)``.

Each translation carries its text, its target pieces, its score and its attention matrix (one row per
target piece plus the final ``</s>``, one column per source piece plus the source ``</s>``), and gives
its word alignment. ``Translator.align(sources, targets)`` aligns given translations by forced
decoding. A model without attention (``model.attention: none``) translates as well, but its
translations carry no attention matrix (``attention`` is None) and it cannot align.

The translator is text in, text out: it cleans and tokenizes, hands token ids to attnmt.decoding,
and detokenizes what comes back.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from attnmt.config import Config, DecodeConfig
from attnmt.data.text import clean_line
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.data.vocab import EOS_PIECE, UNK_ID, WORD_START
from attnmt.data.corpus import chunks
from attnmt.decoding import ForcedDecoding, decode_long_inputs, forced_decode, sampling_generator, with_search
from attnmt.errors import CheckpointError, ConfigError, NoAttentionError
from attnmt.explain.alignment import WordAlignment, attention_links, merge_groups, word_attention
from attnmt.explain.diagnostics import Diagnostics, diagnose
from attnmt.model import Seq2Seq
from attnmt.model.ensemble import Ensemble
from attnmt.runtime import autocast, check_inference_precision, quantize_int8
from attnmt.search import Hypothesis
from attnmt.model.shortlist import Shortlist, Shortlisted
from attnmt.store import load_model, load_shortlist, tokenizers_digest

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


class Translator:
    """A trained model with its tokenizers, ready to translate text."""

    def __init__(
        self,
        model: Seq2Seq | Ensemble,
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
        self.num_parameters = model.num_parameters()  # of the trained model (int8 packs its weights away)
        self.model = quantize_int8(model) if precision == "int8" else model  # an Ensemble's models all quantized
        self.precision = precision
        self.config = config
        self.src_tokenizer = src_tokenizer
        self.trg_tokenizer = trg_tokenizer

    @classmethod
    def load(cls, model_dir: Path | str, device: torch.device | str = "cpu", precision: str = "fp32",
             ensemble: Sequence[Path | str] = (), shortlist: bool = False) -> "Translator":
        """Load a model directory (safetensors + YAML + SentencePiece; never a pickle). ``ensemble``:
        more model directories to decode together with it (attnmt.model.ensemble); they must have
        the same tokenizers, and the search settings are the first model's. ``shortlist``: decode
        with the directory's vocabulary shortlist (``attnmt shortlist``; attnmt.model.shortlist)."""
        config, model, src_tokenizer, trg_tokenizer = load_model(Path(model_dir))
        if shortlist and ensemble:
            raise ConfigError("a shortlist decodes one model: it cannot be combined with an ensemble")
        if ensemble:
            members, digest = [model], tokenizers_digest(src_tokenizer, trg_tokenizer)
            for other_dir in ensemble:
                _, other, other_src, other_trg = load_model(Path(other_dir))
                if tokenizers_digest(other_src, other_trg) != digest:
                    raise CheckpointError(f"{other_dir} and {model_dir} have different vocabularies (their target or "
                                          "source tokenizers differ): only models that share them can be ensembled")
                members.append(other)
            model = Ensemble(members)
        translator = cls(model, config, src_tokenizer, trg_tokenizer, device, precision)
        if shortlist:
            table = load_shortlist(Path(model_dir), tokenizers_digest(src_tokenizer, trg_tokenizer),
                                   src_tokenizer.vocab_size, trg_tokenizer.vocab_size)
            translator.model = Shortlisted(translator.model, Shortlist(table.lists.to(translator.device),
                                                                       table.frequent.to(translator.device)))
        return translator

    @property
    def attention_source(self) -> str:
        """Whose attention the translations show: the model's, or the mean of an ensemble's models."""
        if isinstance(self.model, Ensemble):
            return f"the mean attention of the ensemble's {len(self.model.members)} models"
        return "the model's attention"

    @property
    def has_attention(self) -> bool:
        return self.model.has_attention

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
        return self._translate(texts, self.search_settings(beam, n_best, length_penalty, **search))

    def _translate(self, texts: Sequence[str], decode: DecodeConfig,
                   generator: torch.Generator | None = None) -> list[list[Translation]]:
        """``translate_n_best`` with its settings worked out; ``generator``: what sampling draws from."""
        cleaned = [clean_line(text) for text in texts]
        wanted = [i for i, text in enumerate(cleaned) if text]
        src_ids = self.src_tokenizer.encode_batch([cleaned[i] for i in wanted])
        with autocast(self.precision, self.device):
            found, n_cut = decode_long_inputs(self.model, src_ids, self.src_tokenizer.id_to_piece, decode,
                                              self.max_input_tokens, self.device, generator)
        if n_cut:
            logger.warning("%d input lines longer than %d source tokens were translated in pieces",
                           n_cut, self.max_input_tokens)
        results: list[list[Translation]] = [[_empty_translation(self.has_attention)] for _ in texts]
        for i, ids, hypotheses in zip(wanted, src_ids, found):
            src_pieces = [self.src_tokenizer.id_to_piece(t) for t in ids]
            results[i] = [self._to_translation(h, src_pieces, cleaned[i]) for h in hypotheses[:decode.n_best]]
        return results

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
        generator = sampling_generator(decode, self.device) if decode.sampling else None
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

    def align_chunks(self, pairs: Iterable[tuple[str, str]], chunk_size: int | None = None,
                     ) -> Iterator[list[WordAlignment]]:
        """``align`` over (source, target) pairs of an iterable of any length, a chunk at a time (as
        ``translate_chunks``)."""
        for sources, targets in self._pair_chunks(pairs, chunk_size):
            yield self.align(sources, targets)

    def score_chunks(self, pairs: Iterable[tuple[str, str]], alignment: bool = False, chunk_size: int | None = None,
                     ) -> Iterator[list[PairScore]]:
        """``score`` over (source, target) pairs of an iterable of any length, a chunk at a time."""
        for sources, targets in self._pair_chunks(pairs, chunk_size):
            yield self.score(sources, targets, alignment)

    def align(self, sources: Sequence[str], targets: Sequence[str], shift: bool = False,
              both_ways: bool = False, by_pieces: bool = False) -> list[WordAlignment]:
        """Word alignments of given translations (``targets[i]`` of ``sources[i]``) by forced decoding.

        Words are the whitespace-separated tokens of each text, as in gold alignment files; each word
        is encoded on its own (SentencePiece splits at whitespace before segmenting, so the pieces are
        those of the whole sentence) and its pieces' attention merged. Each target word is linked to
        the source word most attended to by the decoder step that writes it (its state has read the
        word before); ``shift``: by the step after it, which has read the word itself (Chen et al.
        2020's shift); ``both_ways``: only links that are the argmax in both directions;
        ``by_pieces``: link the pieces first (each target piece to its argmax source piece), then two
        words wherever any of their pieces are linked (the usual way of scoring subword aligners;
        a target word of several pieces may then link to several source words). Raises
        NoAttentionError for a model without attention."""
        return [forced.alignment(shift, both_ways, by_pieces)
                for forced in self._force(sources, targets, need_attention=True)]

    def score(self, sources: Sequence[str], targets: Sequence[str], alignment: bool = False) -> list[PairScore]:
        """How probable each given translation is: the log-probability of ``targets[i]`` given
        ``sources[i]`` by forced decoding, summed over its target pieces and the final ``</s>``
        (exactly the sum of the step log-probabilities the model gives it under teacher forcing).
        ``alignment``: also its word alignment (a model with attention only). Use: rescoring n-best
        lists, filtering noisy training pairs by their log-probability per token."""
        forced = self._force(sources, targets, need_attention=alignment)
        return [PairScore([self.trg_tokenizer.id_to_piece(t) for t in f.trg_ids] + [EOS_PIECE],
                          f.result.token_log_probs, f.alignment() if alignment else None) for f in forced]

    def _force(self, sources: Sequence[str], targets: Sequence[str], need_attention: bool) -> list[_Forced]:
        """Forced decoding of each (source, target) pair, the texts cut into whitespace-separated words
        and each word encoded on its own, so that pieces map back to words."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: they must pair up one to one")
        src_words = [source.split() for source in sources]
        trg_words = [target.split() for target in targets]
        src_pieces = [self.src_tokenizer.encode_batch([clean_line(w) for w in words]) for words in src_words]
        trg_pieces = [self.trg_tokenizer.encode_batch([clean_line(w) for w in words]) for words in trg_words]
        with autocast(self.precision, self.device):
            results = forced_decode(self.model, [_concat(p) for p in src_pieces], [_concat(p) for p in trg_pieces],
                                    self.config.decode.batch_size, self.device, need_attention=need_attention)
        return [_Forced(*fields) for fields in zip(results, src_words, trg_words, src_pieces, trg_pieces)]

    def _pair_chunks(self, pairs: Iterable[tuple[str, str]], chunk_size: int | None,
                     ) -> Iterator[tuple[list[str], list[str]]]:
        for chunk in chunks(pairs, chunk_size or CHUNK_BATCHES * self.config.decode.batch_size):
            yield [source for source, _ in chunk], [target for _, target in chunk]

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


@dataclass
class PairScore:
    """The log-probability of a given translation (``Translator.score``)."""

    pieces: list[str]  # the target pieces, </s> last
    token_log_probs: np.ndarray = field(repr=False)  # (tokens,) one per piece, </s> last
    alignment: WordAlignment | None = field(default=None, repr=False)

    @property
    def log_prob(self) -> float:
        """Summed over the target pieces and </s>."""
        return float(self.token_log_probs.sum())

    @property
    def tokens(self) -> int:
        """Target pieces + 1 (</s>)."""
        return len(self.token_log_probs)

    @property
    def per_token(self) -> float:
        """The mean log-probability per target token (</s> included): comparable across lengths."""
        return self.log_prob / self.tokens


@dataclass
class _Forced:
    """One pair's forced decoding, with the words and pieces it was cut into."""

    result: ForcedDecoding
    src_words: list[str]
    trg_words: list[str]
    src_ids: list[list[int]]  # per word
    word_trg_ids: list[list[int]]  # per word

    @property
    def trg_ids(self) -> list[int]:
        return _concat(self.word_trg_ids)

    def alignment(self, shift: bool = False, both_ways: bool = False, by_pieces: bool = False) -> WordAlignment:
        attention = self.result.attention  # (trg pieces + 1, src pieces + 1)
        if shift:  # each target piece takes the row of the next step; </s> keeps its own
            attention = np.concatenate([attention[1:], attention[-1:]])
        src_groups, trg_groups = _piece_groups(self.src_ids), _piece_groups(self.word_trg_ids)
        words = merge_groups(attention, src_groups, trg_groups)  # (trg words + 1, src words + 1)
        alignment = WordAlignment.from_attention(words, self.src_words, self.trg_words, both_ways)
        if by_pieces:
            src_word = {piece: word for word, pieces in enumerate(src_groups) for piece in pieces}
            trg_word = {piece: word for word, pieces in enumerate(trg_groups) for piece in pieces}
            links = {(src_word[s], trg_word[t]) for s, t in attention_links(attention, both_ways)}
            alignment.links = sorted(links, key=lambda link: (link[1], link[0]))
        return alignment


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
