"""Turn the configured corpora into token ids: read and check the files (``read_corpora``), train
(or reuse) the SentencePiece models, encode, and drop the pairs training cannot use, counting each
reason (``prepare_data``). ``prepare_run`` does all of it for a training run, with the checks and
the cleaning of its model directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attnmt.config import Config
from attnmt.data.corpus import ParallelCorpus, filter_pairs, read_parallel
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.errors import CorpusError, TrainingError
from attnmt.store import (
    CONFIG_FILE,
    TRAINER_STATE_FILE,
    atomic_write_text,
    load_config_file,
    load_tokenizers,
    remove_run_files,
    remove_stale_temporaries,
    tokenizer_files,
)
from attnmt.training.distributed import Worker

Log = Callable[[str], None]


@dataclass
class PreparedData:
    src_tokenizer: SubwordTokenizer
    trg_tokenizer: SubwordTokenizer
    train_src: list[list[int]]
    train_trg: list[list[int]]
    valid_src: list[list[int]]
    valid_trg: list[list[int]]
    valid_references: list[str]  # the raw target lines, for BLEU

    @property
    def n_train_pairs(self) -> int:
        return len(self.train_src)

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


def prepare_data(config: Config, model_dir: Path, reuse_tokenizers: bool = False, log: Log = print,
                 corpora: Corpora | None = None) -> PreparedData:
    """Token ids of the corpora (``corpora``, or read now with ``read_corpora``), with tokenizers
    trained into ``model_dir`` or, with ``reuse_tokenizers``, loaded from it."""
    if corpora is None:
        corpora = read_corpora(config)
    train, valid = corpora.train, corpora.valid
    log(f"train: {train.description}, {len(train.src)} pairs; valid: {valid.description}, {len(valid.src)} pairs")
    if reuse_tokenizers:
        src_tok, trg_tok = load_tokenizers(model_dir, config.vocab.joint)
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


# ----------------------------------------------------------------------------- a training run's start


def prepare_run(worker: Worker, config: Config, model_dir: Path, resume: bool, overwrite: bool, log: Log) -> PreparedData:
    """Everything a training run does before its first step but build the model: check the model
    directory and the data, clean the directory, train (or, resuming, load) the tokenizers, encode
    the data, and write the config.

    Every process reads and checks the data before anything in ``model_dir`` is removed: a wrong path
    or parallel files of different lengths must leave the model that ``--overwrite`` would replace
    intact. The main process trains the tokenizers; the others wait, then load them."""
    check_model_dir(model_dir, resume, overwrite)
    if resume:
        check_same_model(config, model_dir)
    corpora = read_corpora(config)
    worker.barrier()  # every process has looked at model_dir and the data before the main one changes it
    data = None
    if worker.is_main:
        model_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(model_dir)  # what a run killed in the middle of a write left behind
        if overwrite and not resume:
            remove_run_files(model_dir)
        data = prepare_data(config, model_dir, reuse_tokenizers=resume, log=log, corpora=corpora)
    worker.barrier()
    if data is None:
        for path in set(tokenizer_files(model_dir, config.vocab.joint)):
            if not path.is_file():
                raise TrainingError(f"process {worker.rank} cannot see {path}, which the main process wrote: on "
                                    "several machines, --model-dir must be on a file system that all of them share")
        data = prepare_data(config, model_dir, reuse_tokenizers=True, log=log, corpora=corpora)
    if worker.is_main and not resume:
        atomic_write_text(model_dir / CONFIG_FILE, config.to_yaml())
    return data


def check_model_dir(model_dir: Path, resume: bool, overwrite: bool) -> None:
    has_model = (model_dir / CONFIG_FILE).exists()
    if resume and not (model_dir / TRAINER_STATE_FILE).exists():
        raise TrainingError(f"cannot resume: {model_dir / TRAINER_STATE_FILE} does not exist")
    if has_model and not resume and not overwrite:
        raise TrainingError(
            f"{model_dir} already holds a model; pass --resume to continue it or --overwrite to start afresh"
        )


def check_same_model(config: Config, model_dir: Path) -> None:
    """--resume must rebuild the same model and tokenizers as the run it continues."""
    saved = load_config_file(model_dir)
    changed = [f"{section}.{key}" for section in ("model", "vocab")
               for key, value in getattr(config, section).__dict__.items()
               if getattr(getattr(saved, section), key) != value]
    if changed:
        raise TrainingError(f"cannot resume: {', '.join(changed)} differ from {model_dir / CONFIG_FILE}; "
                            "the model and vocab settings must stay as they were")
