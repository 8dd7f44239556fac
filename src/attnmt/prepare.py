"""Turn the configured corpora into token ids: read and check the files (``read_corpora``), train
(or reuse) the SentencePiece models, encode, and drop the pairs training cannot use, counting each
reason (``prepare_data``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnmt.checkpoint import tokenizer_files
from attnmt.config import Config
from attnmt.data.corpus import CorpusError, ParallelCorpus, filter_pairs, read_parallel
from attnmt.data.tokenizer import SubwordTokenizer


@dataclass
class PreparedData:
    src_tokenizer: SubwordTokenizer
    trg_tokenizer: SubwordTokenizer
    train_src: list[list[int]]
    train_trg: list[list[int]]
    valid_src: list[list[int]]
    valid_trg: list[list[int]]
    valid_references: list[str]  # the raw target lines, for BLEU

    # Lengths in tokens without BOS/EOS, as the batching functions count them.
    @property
    def train_src_lengths(self) -> list[int]:
        return [len(ids) for ids in self.train_src]

    @property
    def train_trg_lengths(self) -> list[int]:
        return [len(ids) for ids in self.train_trg]

    @property
    def valid_src_lengths(self) -> list[int]:
        return [len(ids) for ids in self.valid_src]

    @property
    def valid_trg_lengths(self) -> list[int]:
        return [len(ids) for ids in self.valid_trg]


def read_split(config: Config, name: str) -> ParallelCorpus:
    spec = getattr(config.data, name)
    if not spec:
        raise CorpusError(f"data.{name} is not set: give a file prefix (data/{name} → data/{name}.xx) or a .tsv file")
    return read_parallel(spec, config.data.src_lang, config.data.trg_lang, config.data.encoding_errors)


@dataclass
class Corpora:
    """The training and validation text, read and checked, before any tokenizer sees it."""

    train: ParallelCorpus
    valid: ParallelCorpus


def read_corpora(config: Config) -> Corpora:
    """Read the training and validation splits and check them (files found, parallel files of equal
    length, valid UTF-8, some usable training pair): everything about the data that can be wrong
    before a tokenizer is trained. Raises CorpusError naming the file."""
    train = read_split(config, "train")
    valid = read_split(config, "valid")
    if not any(s and t for s, t in zip(train.src, train.trg)):
        raise CorpusError(f"no usable training pairs in {train.description}: "
                          f"all {len(train.src)} lines are empty")
    return Corpora(train, valid)


def train_tokenizers(config: Config, corpus: ParallelCorpus, model_dir: Path) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    """SentencePiece on the training text: one joint model, or one per language."""
    vocab = config.vocab
    src_path, trg_path = tokenizer_files(model_dir, vocab.joint)

    def fit(texts, path: Path) -> SubwordTokenizer:
        return SubwordTokenizer.train(
            texts, path, vocab_size=vocab.size, model_type=vocab.type, character_coverage=vocab.character_coverage,
            byte_fallback=vocab.byte_fallback, input_sentence_size=vocab.max_sentences, seed=config.train.seed,
        )

    if vocab.joint:
        joint = fit([t for t in corpus.src + corpus.trg if t], src_path)
        return joint, joint
    return fit([t for t in corpus.src if t], src_path), fit([t for t in corpus.trg if t], trg_path)


def load_tokenizers(config: Config, model_dir: Path) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    src_path, trg_path = tokenizer_files(model_dir, config.vocab.joint)
    src = SubwordTokenizer.load(src_path)
    return src, src if trg_path == src_path else SubwordTokenizer.load(trg_path)


def prepare_data(config: Config, model_dir: Path, reuse_tokenizers: bool = False, log=print,
                 corpora: Corpora | None = None) -> PreparedData:
    """Token ids of the corpora (``corpora``, or read now with ``read_corpora``), with tokenizers
    trained into ``model_dir`` or, with ``reuse_tokenizers``, loaded from it."""
    if corpora is None:
        corpora = read_corpora(config)
    train, valid = corpora.train, corpora.valid
    log(f"train: {train.description}, {len(train.src)} pairs; valid: {valid.description}, {len(valid.src)} pairs")
    if reuse_tokenizers:
        src_tok, trg_tok = load_tokenizers(config, model_dir)
    else:
        src_tok, trg_tok = train_tokenizers(config, train, model_dir)

    train_src, train_trg = src_tok.encode_batch(train.src), trg_tok.encode_batch(train.trg)
    usable = filter_pairs([len(s) for s in train_src], [len(t) for t in train_trg],
                          config.data.max_src_tokens, config.data.max_trg_tokens)
    if usable.n_skipped:
        log(f"training pairs: {usable.summary()} (limits: {config.data.max_src_tokens} source / "
            f"{config.data.max_trg_tokens} target tokens)")
    if not usable.kept:
        raise CorpusError(f"no usable training pairs in {train.description} ({len(train.src)} lines read)")
    kept_src, kept_trg = [train_src[i] for i in usable.kept], [train_trg[i] for i in usable.kept]

    valid_pairs = [(s, t, ref) for s, t, ref in zip(src_tok.encode_batch(valid.src), trg_tok.encode_batch(valid.trg), valid.trg)
                   if s and t]
    if not valid_pairs:
        raise CorpusError(f"no usable validation pairs in {valid.description} ({len(valid.src)} lines read)")
    valid_src, valid_trg, references = (list(column) for column in zip(*valid_pairs))
    return PreparedData(src_tok, trg_tok, kept_src, kept_trg, valid_src, valid_trg, references)
