"""From the configured corpora to what training reads: checked files, SentencePiece models and the
prepared token store, in bounded memory whatever the size of the corpus.

    check_splits     the files exist, two parallel files have the same number of lines (counted on
                     bytes), the validation set is read; nothing is decoded or written yet
    tokenizers       SentencePiece trained on a sample drawn while streaming (``Reservoir``), or
                     reused: when resuming, or when ``data/tokenizer.json`` says they were trained
                     from the same files with the same settings
    token store      the training pairs cleaned, encoded, filtered (empty and over-long pairs
                     skipped and counted) and written once to ``data/train/`` (attnmt.data.token_store);
                     reused while the files, the tokenizers and the length limits stay the same

``prepare_data`` does all three into a model directory (``attnmt prepare`` calls it ahead of time);
``prepare_run`` does it for a training run, with the checks and the cleaning of its model directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from attnmt.config import Config
from attnmt.data.alignments import GoldAlignment, iter_alignments
from attnmt.data.corpus import (
    ParallelCorpus,
    SplitFiles,
    check_lengths,
    chunks,
    count_lines,
    filter_pairs,
    filter_summary,
    iter_pairs,
    read_parallel,
    resolve_split,
)
from attnmt.data.token_store import TokenStore, TokenStoreWriter, read_meta, remove_stale_stores
from attnmt.data.tokenizer import Reservoir, SubwordTokenizer
from attnmt.errors import ConfigError, CorpusError, TrainingError
from attnmt.store import (
    CONFIG_FILE,
    DATA_DIR,
    TRAINER_STATE_FILE,
    atomic_write_bytes,
    atomic_write_text,
    load_config_file,
    load_tokenizers,
    copy_tokenizers,
    remove_run_files,
    remove_stale_temporaries,
    tokenizer_files,
    tokenizers_digest,
)
from attnmt.training.distributed import Worker
from attnmt.training.progress import bar_wanted, counting_bar

Log = Callable[[str], None]

TOKENIZER_META = "tokenizer.json"  # in DATA_DIR: what the tokenizers were trained from
TRAIN_STORE = "train"  # in DATA_DIR: the token store of the training split
CHUNK_PAIRS = 20_000  # pairs read, encoded and written at a time


@dataclass
class PreparedData:
    """What training reads: the tokenizers, the training pairs as a memory-mapped token store, and
    the (small) validation set in memory."""

    src_tokenizer: SubwordTokenizer
    trg_tokenizer: SubwordTokenizer
    train: TokenStore
    valid_src: list[list[int]]
    valid_trg: list[list[int]]
    valid_references: list[str]  # the raw target lines, for BLEU

    @property
    def n_train_pairs(self) -> int:
        return len(self.train)

    # Lengths in tokens without BOS/EOS, as the batching functions count them.
    @property
    def train_src_lengths(self) -> np.ndarray:
        return self.train.src_lengths

    @property
    def train_trg_lengths(self) -> np.ndarray:
        return self.train.trg_lengths

    @property
    def valid_src_lengths(self) -> list[int]:
        return [len(ids) for ids in self.valid_src]

    @property
    def valid_trg_lengths(self) -> list[int]:
        return [len(ids) for ids in self.valid_trg]


@dataclass
class Splits:
    """The training files, checked (``train_lines`` lines each), and the validation set, read."""

    train: SplitFiles
    train_lines: int
    valid: ParallelCorpus


def split_files(config: Config, name: str) -> SplitFiles:
    spec = getattr(config.data, name)
    if not spec:
        raise CorpusError(f"data.{name} is not set: give a file prefix (data/{name} → data/{name}.xx) or a .tsv file")
    return resolve_split(spec, config.data.src_lang, config.data.trg_lang)


def check_splits(config: Config) -> Splits:
    """Everything about the data that can be found wrong without decoding the training corpus:
    files found, parallel files of equal length; the validation set is read (it is small).
    Raises CorpusError naming the file."""
    train = split_files(config, "train")
    train_lines = check_lengths(train)
    split_files(config, "valid")  # set?
    valid = read_parallel(config.data.valid, config.data.src_lang, config.data.trg_lang, config.data.encoding_errors)
    return Splits(train, train_lines, valid)


def prepare_data(config: Config, model_dir: Path, reuse_tokenizers: bool = False, log: Log = print,
                 splits: Splits | None = None, progress: bool | None = None) -> PreparedData:
    """Tokenizers and token store in ``model_dir`` (trained, built, or reused as the module docstring
    says), and the validation set encoded. ``reuse_tokenizers``: load the model directory's
    tokenizers whatever they were trained on (``--resume``). ``splits``: what ``check_splits``
    found, if it was called already."""
    splits = splits or check_splits(config)
    log(f"train: {splits.train.describe()}, {splits.train_lines} pairs; valid: {splits.valid.description}, "
        f"{len(splits.valid.src)} pairs")
    if reuse_tokenizers:
        src_tok, trg_tok = load_tokenizers(model_dir, config.vocab.joint)
    else:
        src_tok, trg_tok = _tokenizers(config, model_dir, splits, log)
    store = _token_store(config, model_dir, splits, src_tok, trg_tok, log, progress)
    return _with_validation(src_tok, trg_tok, store, splits.valid)


def load_prepared(config: Config, model_dir: Path) -> PreparedData:
    """What ``prepare_data`` prepared in ``model_dir``, for the other processes of a distributed
    run: the tokenizers loaded and the store mapped (not checked against the files, not rebuilt:
    the main process has just done that)."""
    src_tok, trg_tok = load_tokenizers(model_dir, config.vocab.joint)
    store = TokenStore.open(model_dir / DATA_DIR / TRAIN_STORE)
    split_files(config, "valid")
    valid = read_parallel(config.data.valid, config.data.src_lang, config.data.trg_lang, config.data.encoding_errors)
    return _with_validation(src_tok, trg_tok, store, valid)


def _with_validation(src_tok: SubwordTokenizer, trg_tok: SubwordTokenizer, store: TokenStore,
                     valid: ParallelCorpus) -> PreparedData:
    """The prepared data, with the validation pairs encoded (those empty on a side left out)."""
    valid_pairs = [(s, t, ref) for s, t, ref in zip(src_tok.encode_batch(valid.src), trg_tok.encode_batch(valid.trg),
                                                    valid.trg) if s and t]
    if not valid_pairs:
        raise CorpusError(f"no usable validation pairs in {valid.description} ({len(valid.src)} lines read)")
    valid_src, valid_trg, references = (list(column) for column in zip(*valid_pairs))
    return PreparedData(src_tok, trg_tok, store, valid_src, valid_trg, references)


def files_fingerprint(*paths: Path) -> list[dict[str, Any]]:
    """What identifies the content of files without reading them: path, size, mtime (each file once:
    a TSV split names one file twice)."""
    fingerprint = []
    for path in dict.fromkeys(paths):
        stat = path.stat()
        fingerprint.append({"path": str(path.resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns})
    return fingerprint


# ----------------------------------------------------------------------------- tokenizers


def _tokenizers(config: Config, model_dir: Path, splits: Splits, log: Log) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    """The tokenizers trained from this data with these settings: those already in ``model_dir``
    if they were, else trained now on a sample of the training text."""
    meta_path = model_dir / DATA_DIR / TOKENIZER_META
    fingerprint = {"vocab": asdict(config.vocab), "train": files_fingerprint(splits.train.src, splits.train.trg),
                   "encoding_errors": config.data.encoding_errors}
    paths = set(tokenizer_files(model_dir, config.vocab.joint))
    if _read_json(meta_path) == json_round_trip(fingerprint) and all(path.is_file() for path in paths):
        log(f"tokenizers: reusing {', '.join(sorted(path.name for path in paths))}, trained on the same data")
        return load_tokenizers(model_dir, config.vocab.joint)
    src_sample, trg_sample = _sample_sentences(config, splits)
    vocab = config.vocab
    src_path, trg_path = tokenizer_files(model_dir, vocab.joint)

    def fit(texts: list[str], path: Path) -> SubwordTokenizer:
        tokenizer = SubwordTokenizer.train(
            texts, None, vocab_size=vocab.size, model_type=vocab.type, character_coverage=vocab.character_coverage,
            byte_fallback=vocab.byte_fallback, input_sentence_size=vocab.max_sentences, seed=vocab.seed,
        )
        atomic_write_bytes(path, tokenizer.serialized)
        return tokenizer

    model_dir.mkdir(parents=True, exist_ok=True)
    if vocab.joint:
        joint = fit(src_sample + trg_sample, src_path)
        src_tok, trg_tok = joint, joint
    else:
        src_tok, trg_tok = fit(src_sample, src_path), fit(trg_sample, trg_path)
    (model_dir / DATA_DIR).mkdir(exist_ok=True)
    atomic_write_text(meta_path, _to_json(fingerprint))
    return src_tok, trg_tok


def _sample_sentences(config: Config, splits: Splits) -> tuple[list[str], list[str]]:
    """The non-empty training sentences SentencePiece learns from, drawn while streaming: every
    one while there are at most ``vocab.max_sentences`` (half each side for a joint vocabulary),
    else a uniform sample of that many."""
    limit = config.vocab.max_sentences
    per_side = (limit - limit // 2, limit // 2) if config.vocab.joint else (limit, limit)
    samples = [Reservoir(size, config.vocab.seed + side) for side, size in enumerate(per_side)]
    for src, trg in iter_pairs(splits.train, config.data.encoding_errors, splits.train_lines):
        for sample, text in zip(samples, (src, trg)):
            if text:
                sample.add(text)
    if not samples[0].items or not samples[1].items:
        raise CorpusError(f"no usable training pairs in {splits.train.describe()}: "
                          f"all {splits.train_lines} lines are empty on one side")
    return samples[0].items, samples[1].items


# ----------------------------------------------------------------------------- the token store


def _token_store(config: Config, model_dir: Path, splits: Splits, src_tok: SubwordTokenizer,
                 trg_tok: SubwordTokenizer, log: Log, progress: bool | None) -> TokenStore:
    """The training split's token store: the one in ``model_dir`` if it was built from the same files
    with the same tokenizers and limits, else built now."""
    directory = model_dir / DATA_DIR / TRAIN_STORE
    fingerprint = {"train": files_fingerprint(splits.train.src, splits.train.trg),
                   "tokenizers": tokenizers_digest(src_tok, trg_tok),
                   "max_src_tokens": config.data.max_src_tokens, "max_trg_tokens": config.data.max_trg_tokens,
                   "encoding_errors": config.data.encoding_errors}
    if config.train.guided_alignment:
        fingerprint["alignments"] = files_fingerprint(Path(config.train.guided_alignment))
    meta = read_meta(directory)
    if meta is not None and meta["fingerprint"] == json_round_trip(fingerprint):
        store = TokenStore.open(directory)
        log(f"training pairs: {_summary(store.meta['counts'], config)}; the prepared store {directory} is reused")
        return store
    if meta is not None:
        log(f"the token store {directory} was prepared from other files, tokenizers or limits: preparing it again")
    remove_stale_stores(directory.parent)
    store = _build_store(config, splits, src_tok, trg_tok, directory, fingerprint, progress)
    log(f"training pairs: {_summary(store.meta['counts'], config)}; prepared into {directory} "
        f"({store.size_on_disk() / 2**20:.1f} MiB)")
    return store


def _build_store(config: Config, splits: Splits, src_tok: SubwordTokenizer, trg_tok: SubwordTokenizer,
                 directory: Path, fingerprint: dict[str, Any], progress: bool | None) -> TokenStore:
    """One streaming pass: read, clean, encode (SentencePiece on all cores) and filter the pairs a
    chunk at a time, appending the kept ones to the store."""
    data = config.data
    counts = {"read": 0, "kept": 0, "empty": 0, "too_long": 0}
    guided = bool(config.train.guided_alignment)
    pairs = iter_pairs(splits.train, data.encoding_errors, splits.train_lines)
    # each pair with its word alignment (read in step with the text, kept pairs or not), or with None
    items = zip(pairs, _word_alignments(config, splits), strict=True) if guided else ((pair, None) for pair in pairs)
    bar = counting_bar(splits.train_lines, "preparing", "pairs", show=bar_wanted(progress))
    with TokenStoreWriter(directory, max(src_tok.vocab_size, trg_tok.vocab_size),
                          max(data.max_src_tokens, data.max_trg_tokens), with_links=guided) as writer:
        for chunk in chunks(items, CHUNK_PAIRS):
            src_ids = src_tok.encode_batch([src for (src, _), _ in chunk])
            trg_ids = trg_tok.encode_batch([trg for (_, trg), _ in chunk])
            usable = filter_pairs([len(s) for s in src_ids], [len(t) for t in trg_ids],
                                  data.max_src_tokens, data.max_trg_tokens)
            links = None
            if guided:
                links = [piece_links(chunk[i][1], chunk[i][0], src_tok.word_of_pieces(src_ids[i]),
                                     trg_tok.word_of_pieces(trg_ids[i]), f"{config.train.guided_alignment}, line "
                                     f"{counts['read'] + i + 1}") for i in usable.kept]
            writer.add([src_ids[i] for i in usable.kept], [trg_ids[i] for i in usable.kept], links)
            counts["read"] += len(chunk)
            counts["kept"] += len(usable.kept)
            counts["empty"] += usable.n_empty
            counts["too_long"] += usable.n_too_long
            bar.update(len(chunk))
        bar.close()
        if not counts["kept"]:
            raise CorpusError(f"no usable training pairs in {splits.train.describe()} ({counts['read']} lines read)")
        return writer.finish(fingerprint, counts)


def _word_alignments(config: Config, splits: Splits) -> Iterator[GoldAlignment]:
    """The word alignments of ``train.guided_alignment``, one per training line (checked to be as many)."""
    path = Path(config.train.guided_alignment)
    lines = count_lines(path)
    if lines != splits.train_lines:
        raise CorpusError(f"the alignments {path} have {lines} lines but the training data "
                          f"{splits.train.describe()} has {splits.train_lines}: they must pair up line by line")
    return iter_alignments(path)


def piece_links(alignment: GoldAlignment, pair: tuple[str, str], src_word_of_piece: np.ndarray,
                trg_word_of_piece: np.ndarray, where: str) -> np.ndarray:
    """(links, 2) (source piece, target piece): the word alignment of a (cleaned) sentence pair, each
    piece taking the links of its word. A link to a word the line does not have is a CorpusError
    naming ``where``; a pair whose pieces do not make up its words gets no links."""
    n_src, n_trg = len(pair[0].split()), len(pair[1].split())
    largest_src, largest_trg = alignment.largest_indices
    if largest_src >= n_src or largest_trg >= n_trg:
        side, largest, count = ("source", largest_src, n_src) if largest_src >= n_src else ("target", largest_trg, n_trg)
        raise CorpusError(f"{where}: a link points at {side} word {largest}, but the line has {count} {side} words "
                          "(indices count from 0, source first, words as split by spaces after cleaning)")
    if (src_word_of_piece[-1:] + 1).tolist() != [n_src] or (trg_word_of_piece[-1:] + 1).tolist() != [n_trg]:
        return np.zeros((0, 2), dtype=np.int64)  # e.g. a word that tokenizes to nothing
    words = np.zeros((n_src, n_trg), dtype=bool)  # (source words, target words)
    for source, target in alignment.possible:
        words[source, target] = True
    return np.argwhere(words[src_word_of_piece][:, trg_word_of_piece])  # (links, 2)


def _summary(counts: dict[str, int], config: Config) -> str:
    summary = filter_summary(counts["kept"], counts["empty"], counts["too_long"])
    if counts["empty"] or counts["too_long"]:
        summary += f" (limits: {config.data.max_src_tokens} source / {config.data.max_trg_tokens} target tokens)"
    return summary


def _to_json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


def json_round_trip(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), to compare with what was stored."""
    return json.loads(json.dumps(value))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- a training run's start


def prepare_run(worker: Worker, config: Config, model_dir: Path, resume: bool, overwrite: bool, log: Log,
                progress: bool | None = None, init_from: Path | None = None) -> PreparedData:
    """Everything a training run does before its first step but build the model: check the model
    directory and the data, clean the directory, prepare the tokenizers and the token store, encode
    the validation set, and write the config.

    The data is checked (files found, line counts equal) before anything in ``model_dir`` is removed:
    a wrong path or parallel files of different lengths leave the model that ``--overwrite`` would
    replace intact. The main process prepares; the others wait, then map the same store."""
    check_model_dir(model_dir, resume, overwrite)
    if resume:
        check_same_model(config, model_dir)
    data = None
    if worker.is_main:
        splits = check_splits(config)
        model_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(model_dir)  # what a run killed in the middle of a write left behind
        if overwrite and not resume:
            remove_run_files(model_dir)
        if init_from is not None and not resume:  # fine-tuning: the tokenizers of the model it starts from
            copy_tokenizers(init_from, model_dir, config.vocab.joint)
        data = prepare_data(config, model_dir, reuse_tokenizers=resume or init_from is not None, log=log,
                            splits=splits, progress=progress)
    worker.barrier()
    if data is None:
        for path in [*set(tokenizer_files(model_dir, config.vocab.joint)), model_dir / DATA_DIR / TRAIN_STORE]:
            if not path.exists():
                raise TrainingError(f"process {worker.rank} cannot see {path}, which the main process wrote: on "
                                    "several machines, --model-dir must be on a file system that all of them share")
        data = load_prepared(config, model_dir)
    if worker.is_main and not resume:
        atomic_write_text(model_dir / CONFIG_FILE, config.to_yaml())
    return data


# What a fine-tuned model keeps of the model it starts from: its architecture and vocabulary. Dropout
# is a training setting that happens to live in the model section: it may change.
FINETUNE_FREE_KEYS = frozenset({"model.dropout"})


def finetune_config(config: Config, given: set[str], init_from: Path) -> Config:
    """``config`` with the model and vocab sections of the model in ``init_from`` (fine-tuning
    trains that model further: same architecture, same tokenizers). A key of those sections that
    ``config`` sets explicitly (``given``, see ``config.given_keys``) to another value is a
    ConfigError naming it."""
    base = load_config_file(init_from)
    contradictions = [f"{key}: {ours!r} here, {theirs!r} in {init_from}"
                      for key, ours, theirs in model_differences(config, base)
                      if key in given and key not in FINETUNE_FREE_KEYS]
    if contradictions:
        raise ConfigError("--init-from keeps the architecture and vocabulary of the model it starts from; the "
                          f"config contradicts it: {'; '.join(contradictions)}")
    model = base.model
    if "model.dropout" in given:
        model = replace(model, dropout=config.model.dropout)
    return replace(config, model=model, vocab=base.vocab).validate()


def model_differences(config: Config, other: Config) -> list[tuple[str, Any, Any]]:
    """(section.key, value in ``config``, value in ``other``) of the model and vocab settings that differ."""
    return [(f"{section}.{key}", value, getattr(getattr(other, section), key)) for section in ("model", "vocab")
            for key, value in asdict(getattr(config, section)).items() if getattr(getattr(other, section), key) != value]


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
    changed = [key for key, _, _ in model_differences(config, load_config_file(model_dir))]
    if changed:
        raise TrainingError(f"cannot resume: {', '.join(changed)} differ from {model_dir / CONFIG_FILE}; "
                            "the model and vocab settings must stay as they were")

