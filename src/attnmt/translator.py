"""The public Python API: ``Translator.load(model_dir).translate(["..."], beam=5)``.

Each translation carries its text, its target pieces, its score and its attention matrix (one row per
target piece plus the final ``</s>``, one column per source piece plus the source ``</s>``), and gives
its word alignment. ``Translator.align(sources, targets)`` aligns given translations by forced
decoding. A model without attention (``model.attention: none``) translates as well, but its
translations carry no attention matrix (``attention`` is None) and it cannot align.

The translator is text in, text out (attnmt.translation.TextTranslator, which the ONNX translator of
attnmt.export shares): it cleans and tokenizes, hands token ids to attnmt.decoding, and detokenizes
what comes back. This class adds what needs PyTorch: devices and precisions, ensembles, shortlists,
and forced decoding (scoring and aligning given translations, and the deletion test of
``diagnose``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from attnmt.config import Config, DecodeConfig
from attnmt.data.corpus import chunks
from attnmt.data.text import clean_line
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.data.vocab import EOS_PIECE
from attnmt.errors import AlignmentError, CheckpointError, ConfigError
from attnmt.explain.alignment import (WordAlignment, attention_links, deletion_links, group_words, link_scores, merge_groups,
                                      mean_link_scores, two_way_links, word_link_scores)
from attnmt.explain.diagnostics import (Diagnostics, attended_regret, deletion_variants, diagnose_matrix,
                                        with_deletion_test)
from attnmt.forced_decoding import ForcedDecoding, forced_decode
from attnmt.model import Seq2Seq
from attnmt.model.ensemble import Ensemble
from attnmt.model.shortlist import Shortlist, Shortlisted
from attnmt.runtime import autocast, check_inference_precision, quantize_int8, sampling_generator, tensors_on
from attnmt.search import Hypothesis
from attnmt.store import load_model, load_shortlist, tokenizers_digest
from attnmt.translation import CHUNK_BATCHES, TextTranslator, Translation

__all__ = ["CHUNK_BATCHES", "PairScore", "Translation", "Translator"]


class Translator(TextTranslator):
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
        model = quantize_int8(model) if precision == "int8" else model  # an Ensemble's models all quantized
        super().__init__(model, config, src_tokenizer, trg_tokenizer, tensors_on(self.device))
        self.precision = precision

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

    def _decode(self, src_ids: list[list[int]], decode: DecodeConfig, generator: torch.Generator | None,
                ) -> tuple[list[list[Hypothesis]], int]:
        with autocast(self.precision, self.device):
            return super()._decode(src_ids, decode, generator)

    def _sampling_generator(self, decode: DecodeConfig) -> torch.Generator:
        return sampling_generator(decode, self.device)

    def align_chunks(self, pairs: Iterable[tuple[str, str]], chunk_size: int | None = None, **reading,
                     ) -> Iterator[list[WordAlignment]]:
        """``align`` over (source, target) pairs of an iterable of any length, a chunk at a time (as
        ``translate_chunks``); ``reading``: ``align``'s options."""
        if "reverse" in reading or "also" in reading:  # lists, read again for every chunk
            reading = {**reading, "reverse": _translators(reading.get("reverse")), "also": list(reading.get("also", ()))}
        for sources, targets in self._pair_chunks(pairs, chunk_size):
            yield self.align(sources, targets, **reading)

    def score_chunks(self, pairs: Iterable[tuple[str, str]], alignment: bool = False, chunk_size: int | None = None,
                     ) -> Iterator[list[PairScore]]:
        """``score`` over (source, target) pairs of an iterable of any length, a chunk at a time."""
        for sources, targets in self._pair_chunks(pairs, chunk_size):
            yield self.score(sources, targets, alignment)

    def align(self, sources: Sequence[str], targets: Sequence[str], shift: bool = False,
              both_ways: bool = False, by_pieces: bool = False, by_deletion: bool = False,
              deletion_only: bool = False, reverse: Translator | Iterable[Translator] | None = None,
              also: Iterable[Translator] = ()) -> list[WordAlignment]:
        """Word alignments of given translations (``targets[i]`` of ``sources[i]``) by forced decoding.

        Words are the whitespace-separated tokens of each text, as in gold alignment files; each word
        is encoded on its own (SentencePiece splits at whitespace before segmenting, so the pieces are
        those of the whole sentence) and its pieces' attention merged. Each target word is linked to
        the source word most attended to by the decoder step that writes it (its state has read the
        word before); ``shift``: by the step after it, which has read the word itself (Chen et al.
        2020's shift); ``both_ways``: only links that are the argmax in both directions;
        ``by_pieces``: link the pieces first (each target piece to its argmax source piece), then two
        words wherever any of their pieces are linked (the usual way of scoring subword aligners;
        a target word of several pieces may then link to several source words). ``by_deletion``:
        each target piece linked to the source word with the largest product of the attention it gave
        the word and the drop in its log-probability when the word is left out of the source
        (``explain.alignment.deletion_links``; one forced decoding per source word; ``both_ways``
        applies, ``shift`` does not); ``deletion_only``: by the drop alone (Li et al. 2019's prediction
        difference). ``reverse``: a model of the opposite direction (target→source), which
        force-decodes each pair turned round; each model scores every pair of words (the attention, or
        as ``by_deletion`` / ``deletion_only`` say; a word takes its pieces' largest score), and each
        target word is linked to the source word with the largest product of the two models' scores
        (``explain.alignment.two_way_links``; ``both_ways`` applies, ``shift`` and ``by_pieces`` do
        not). Several reverse models, and ``also``, more models of this direction, read each pair as
        this one does, and each direction's word scores are averaged (``explain.alignment
        .mean_link_scores``) before the product: models combined word by word, so that they may have
        different vocabularies (other seeds, other training text), unlike an ensemble. Raises
        NoAttentionError for a model without attention."""
        reverse, also = _translators(reverse), list(also)
        if also and not reverse:
            raise ValueError("also= combines models at the two-way reading: give reverse= too")
        for other in also:
            self._check_direction(other, self.config.data.src_lang, self.config.data.trg_lang, "each model of also=")
        for model in reverse:
            self._check_reverse(model, shift or by_pieces)
        forced = self._force(sources, targets, need_attention=True)
        alignments = [f.alignment(shift, both_ways, by_pieces) for f in forced]
        if reverse:
            reading = {"by_deletion": by_deletion, "deletion_only": deletion_only}
            forward = [self._word_link_scores(forced, **reading)] + [
                other._word_link_scores(other._force(sources, targets, need_attention=True), **reading) for other in also]
            backward = [model._word_link_scores(model._force(targets, sources, need_attention=True), **reading)
                        for model in reverse]
            for alignment, forward_scores, backward_scores in zip(alignments, zip(*forward), zip(*backward)):
                alignment.links = two_way_links(mean_link_scores(forward_scores), mean_link_scores(backward_scores),
                                                both_ways)
        elif by_deletion:
            evidence = self._link_evidence(forced, True, deletion_only)
            for alignment, f, (effects, attention) in zip(alignments, forced, evidence):
                alignment.links = deletion_links(effects, _piece_groups(f.word_trg_ids)[:-1], both_ways, attention)
        return alignments

    def _check_reverse(self, reverse: Translator, piece_reading: bool) -> None:
        if piece_reading:
            raise ValueError("aligning with a reverse model reads words, not pieces or the next step: "
                             "shift and by_pieces do not apply")
        self._check_direction(reverse, self.config.data.trg_lang, self.config.data.src_lang, "the reverse model")

    def _check_direction(self, other: Translator, src_lang: str, trg_lang: str, role: str) -> None:
        data, theirs = self.config.data, other.config.data
        if (theirs.src_lang, theirs.trg_lang) != (src_lang, trg_lang):
            raise AlignmentError(f"{role} translates {theirs.src_lang}→{theirs.trg_lang}, but this one translates "
                                 f"{data.src_lang}→{data.trg_lang}: {role} must translate {src_lang}→{trg_lang}")

    def _link_evidence(self, forced: Sequence[_Forced], by_deletion: bool, deletion_only: bool,
                       ) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """Per pair: the deletion test's effects (trg pieces + 1, src words), or None without
        ``by_deletion``; the attention merged to source words (trg pieces + 1, src words + 1), or None
        with ``deletion_only``."""
        effects = (self._deletion_effects([f.src_ids for f in forced], [f.trg_ids for f in forced],
                                          [f.result for f in forced]) if by_deletion else [None] * len(forced))
        attentions = [None if by_deletion and deletion_only else merge_groups(
            f.result.attention, _piece_groups(f.src_ids), [[row] for row in range(len(f.result.attention))])
            for f in forced]
        return list(zip(effects, attentions))

    def _word_link_scores(self, forced: Sequence[_Forced], by_deletion: bool, deletion_only: bool,
                          ) -> list[np.ndarray]:
        """Per pair, (trg words, src words): how strongly this model links each target word to each
        source word (explain.alignment.link_scores, a word taking its pieces' largest)."""
        return [word_link_scores(link_scores(effects, attention), _piece_groups(f.word_trg_ids)[:-1])
                for f, (effects, attention) in zip(forced, self._link_evidence(forced, by_deletion, deletion_only))]

    def score(self, sources: Sequence[str], targets: Sequence[str], alignment: bool = False) -> list[PairScore]:
        """How probable each given translation is: the log-probability of ``targets[i]`` given
        ``sources[i]`` by forced decoding, summed over its target pieces and the final ``</s>``
        (exactly the sum of the step log-probabilities the model gives it under teacher forcing).
        ``alignment``: also its word alignment (a model with attention only). Use: rescoring n-best
        lists, filtering noisy training pairs by their log-probability per token."""
        forced = self._force(sources, targets, need_attention=alignment)
        return [PairScore([self.trg_tokenizer.id_to_piece(t) for t in f.trg_ids] + [EOS_PIECE],
                          f.result.token_log_probs, f.alignment() if alignment else None) for f in forced]

    def diagnose(self, translations: Sequence[Translation], deletion_test: bool = True) -> list[Diagnostics]:
        """What the attention says about each translation (``Translation.diagnostics``) and, with
        ``deletion_test``, what the model says when each source word is left out: the deletion gains,
        the attended regrets and the word they flag as untranslated (attnmt.explain.diagnostics). The
        test costs one forced decoding per source word of each translation. Raises NoAttentionError for
        a model without attention."""
        diagnostics = [translation.diagnostics for translation in translations]
        if not deletion_test:
            return diagnostics
        src_words = [[[self.src_tokenizer.piece_to_id(t.src_tokens[i]) for i in word] for word in group_words(t.src_tokens)]
                     for t in translations]
        trg_words = [[[self.trg_tokenizer.piece_to_id(t.tokens[i]) for i in word] for word in group_words(t.tokens)]
                     for t in translations]
        whole = self._forced_decode([_concat(words) for words in src_words], [_concat(words) for words in trg_words],
                                    need_attention=True)
        return [with_deletion_test(found, *test)
                for found, test in zip(diagnostics, self._deletion_test(src_words, trg_words, whole))]

    def diagnose_pairs(self, sources: Sequence[str], targets: Sequence[str], deletion_test: bool = True,
                       ) -> list[Diagnostics]:
        """``diagnose`` for given translations (``targets[i]`` of ``sources[i]``: a human's, another
        system's, a reference with a gap), read off their forced decoding, words as in ``align``.
        Raises NoAttentionError for a model without attention."""
        forced = self._force(sources, targets, need_attention=True)
        found = [diagnose_matrix(a.attention, a.src_words, a.trg_words) for a in (f.alignment() for f in forced)]
        if not deletion_test:
            return found
        tests = self._deletion_test([f.src_ids for f in forced], [f.word_trg_ids for f in forced],
                                    [f.result for f in forced])
        return [with_deletion_test(diagnostics, *test) for diagnostics, test in zip(found, tests)]

    def _deletion_test(self, src_words: Sequence[list[list[int]]], trg_words: Sequence[list[list[int]]],
                       whole: Sequence[ForcedDecoding]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The deletion test on piece ids, each text as its words' pieces, ``whole`` each pair's forced
        decoding with attention: per pair, each source word's deletion gain and attended regret
        (attnmt.explain.diagnostics)."""
        effects = self._deletion_effects(src_words, [_concat(words) for words in trg_words], whole)
        return [(effect.sum(axis=0), attended_regret(forced.attention, forced.regret, _piece_groups(src), _piece_groups(trg)))
                for effect, forced, src, trg in zip(effects, whole, src_words, trg_words)]

    def _deletion_effects(self, src_words: Sequence[list[list[int]]], trg_ids: Sequence[list[int]],
                          whole: Sequence[ForcedDecoding]) -> list[np.ndarray]:
        """For each pair, (len(target) + 1, source words): how much each target token's log-probability
        (``</s>`` last) changes when each source word is left out of the source; ``whole``: each pair's
        forced decoding with the whole source, which the caller has already."""
        sources, targets = [], []
        for words, target in zip(src_words, trg_ids):
            variants = deletion_variants(words)
            sources += variants
            targets += [target] * len(variants)
        without = self._forced_decode(sources, targets)
        effects, start = [], 0
        for words, forced in zip(src_words, whole):
            rows = [result.token_log_probs for result in without[start : start + len(words)]]  # each (len(target) + 1,)
            effects.append(np.stack(rows, axis=1) - forced.token_log_probs[:, None] if rows
                           else np.zeros((len(forced.token_log_probs), 0)))
            start += len(words)
        return effects

    def _force(self, sources: Sequence[str], targets: Sequence[str], need_attention: bool) -> list[_Forced]:
        """Forced decoding of each (source, target) pair, the texts cut into whitespace-separated words
        and each word encoded on its own, so that pieces map back to words."""
        src_pieces, trg_pieces = self._word_pieces(sources, targets)
        results = self._forced_decode([_concat(p) for p in src_pieces], [_concat(p) for p in trg_pieces], need_attention)
        return [_Forced(result, source.split(), target.split(), src, trg)
                for result, source, target, src, trg in zip(results, sources, targets, src_pieces, trg_pieces)]

    def _forced_decode(self, src_ids: Sequence[list[int]], trg_ids: Sequence[list[int]], need_attention: bool = False,
                       ) -> list[ForcedDecoding]:
        """attnmt.forced_decoding.forced_decode with this translator's model, precision, device and batch size."""
        with autocast(self.precision, self.device):
            return forced_decode(self.model, src_ids, trg_ids, self.config.decode.batch_size, self.device,
                                 need_attention=need_attention)

    def _word_pieces(self, sources: Sequence[str], targets: Sequence[str],
                     ) -> tuple[list[list[list[int]]], list[list[list[int]]]]:
        """Each text's whitespace-separated words, each word encoded on its own (SentencePiece splits at
        whitespace first, so these are the pieces of the whole text): (source, target) pieces per word."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: they must pair up one to one")
        src_pieces = [self.src_tokenizer.encode_batch([clean_line(w) for w in source.split()]) for source in sources]
        trg_pieces = [self.trg_tokenizer.encode_batch([clean_line(w) for w in target.split()]) for target in targets]
        return src_pieces, trg_pieces

    def _pair_chunks(self, pairs: Iterable[tuple[str, str]], chunk_size: int | None,
                     ) -> Iterator[tuple[list[str], list[str]]]:
        for chunk in chunks(pairs, chunk_size or CHUNK_BATCHES * self.config.decode.batch_size):
            yield [source for source, _ in chunk], [target for _, target in chunk]


def _translators(models: Translator | Iterable[Translator] | None) -> list[Translator]:
    """None, one translator or several, as a list."""
    return [] if models is None else [models] if isinstance(models, Translator) else list(models)


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


def _concat(word_ids: list[list[int]]) -> list[int]:
    return [token for ids in word_ids for token in ids]


def _piece_groups(word_ids: list[list[int]]) -> list[list[int]]:
    """Indices of each word's pieces in the concatenated ids, then the ``</s>`` that collate appends."""
    groups, start = [], 0
    for ids in word_ids:
        groups.append(list(range(start, start + len(ids))))
        start += len(ids)
    return groups + [[start]]
