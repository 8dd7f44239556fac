"""Typed, nested configuration: every default in one place, YAML in and out.

A config has five sections (data, vocab, model, train, decode). The loader is strict: an unknown
key is an error that names it and lists the valid keys, a value of the wrong type is an error that
names the key, the expected type and the value.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from attnmt.errors import ConfigError


@dataclass
class DataConfig:
    """Where the parallel text is. A split is a prefix (``data/train`` → ``data/train.en`` and
    ``data/train.de``, each optionally ``.gz``) or one TSV file (``.tsv`` / ``.tsv.gz``)."""

    train: str = ""
    valid: str = ""
    test: str = ""
    src_lang: str = "src"
    trg_lang: str = "trg"
    max_src_tokens: int = 100  # longer training pairs (in subword tokens) are skipped
    max_trg_tokens: int = 100
    encoding_errors: Literal["strict", "replace"] = "strict"


@dataclass
class VocabConfig:
    """SentencePiece models trained by ``attnmt train`` on the training data."""

    type: Literal["unigram", "bpe", "char"] = "unigram"
    size: int = 8000
    joint: bool = True  # one model for both languages (needed for shared embeddings)
    character_coverage: float = 1.0
    byte_fallback: bool = True  # unseen characters become bytes instead of <unk>
    max_sentences: int = 1_000_000  # sentences sampled to train SentencePiece
    seed: int = 42  # the sample and SentencePiece; not train.seed, so runs that differ only in it share a vocabulary


@dataclass
class ModelConfig:
    """The encoder–decoder of DESIGN.md."""

    rnn: Literal["gru", "lstm"] = "gru"
    embedding_size: int = 256
    encoder_hidden_size: int = 512  # per direction: encoder states are 2 * this
    hidden_size: int = 512  # the decoder's state size
    encoder_layers: int = 1
    decoder_layers: int = 1
    dropout: float = 0.3
    attention: Literal["dot", "general", "additive", "none"] = "general"  # none: no attention, the plain encoder–decoder
    input_feeding: bool = True
    share_embeddings: bool = False  # source and target embeddings shared (needs vocab.joint)
    tie_output: bool = True  # output projection shares the target embedding matrix
    output_bias: bool = True  # a bias in the output projection (Joey NMT's RNN decoder has none)


@dataclass
class TrainConfig:
    """The training loop: optimisation, schedule, validation, stopping."""

    seed: int = 42
    batch_tokens: int = 2000  # target-side tokens per batch (padding included)
    max_epochs: int = 30
    max_steps: int = 0  # 0: no limit
    max_time: float = 0.0  # wall-clock seconds of training; 0: no limit. YAML may say "60m", "1h"
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 0.0
    clip_grad_norm: float = 1.0
    label_smoothing: float = 0.1
    schedule: Literal["plateau", "warmup_decay", "constant"] = "plateau"
    warmup_steps: int = 500  # warmup_decay: linear warmup, then inverse square root decay
    plateau_factor: float = 0.5
    plateau_patience: int = 2  # validations without improvement before the LR is cut
    valid_every: int = 500  # steps
    checkpoint_every: int = 0  # steps between trainer-state checkpoints (for --resume); 0: at each validation
    valid_max_sentences: int = 0  # 0: the whole validation set
    log_every: int = 50
    early_stopping_metric: Literal["bleu", "loss"] = "bleu"
    early_stopping_patience: int = 6  # validations without improvement; 0: never stop early
    num_threads: int = 0  # torch threads; 0: torch's default
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N or mps
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast, fp32 weights and optimizer
    accumulate: int = 1  # batches per optimizer step (per process): an effective batch of accumulate * batch_tokens
    guided_alignment: str = ""  # word alignments of the training data (Pharaoh, e.g. from attnmt eflomal): attention learns them
    guided_alignment_weight: float = 0.1  # the weight of the guided alignment loss against the translation loss
    keep_checkpoints: int = 0  # the weights of the last K validations kept in checkpoints/, for averaging; 0: none
    average_last: int = 0  # at the end, average the last K kept checkpoints; kept as the model if it validates better


@dataclass
class DecodeConfig:
    """Search settings used by validation and as defaults of ``translate``."""

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0  # GNMT alpha; 0 ranks by raw log-probability
    coverage_penalty: float = 0.0  # GNMT beta: beam search ranks lower what left source words unattended; 0: off
    max_length_ratio: float = 2.0  # target tokens at most ratio * source tokens + max_length_extra
    max_length_extra: int = 10
    batch_size: int = 64  # sentences searched at once (search refills their rows from a pool of 8 batches)
    max_input_tokens: int = 0  # longer inputs are translated in pieces of at most this; 0: data.max_src_tokens
    sampling: bool = False  # draw n_best samples from the model instead of searching (e.g. for back-translation)
    temperature: float = 1.0  # sampling: < 1 sharpens the distribution, > 1 flattens it
    top_k: int = 0  # sampling: only from the k most probable tokens; 0: all
    top_p: float = 1.0  # sampling: only from the most probable tokens that hold this much probability
    seed: int = 0  # sampling: the same seed, the same samples

    def check(self) -> "DecodeConfig":
        """The checks of the decode settings alone (also of one call's, see Translator.search_settings);
        raises ConfigError naming the key. Returns self."""
        for key in ("beam_size", "n_best", "batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"decode.{key} must be positive, got {getattr(self, key)}")
        if self.coverage_penalty < 0:
            raise ConfigError(f"decode.coverage_penalty must be >= 0, got {self.coverage_penalty}")
        if self.sampling:
            check_sampling(self.temperature, self.top_k, self.top_p, prefix="decode.")
        elif self.n_best > self.beam_size:
            raise ConfigError(f"decode.n_best ({self.n_best}) cannot exceed decode.beam_size ({self.beam_size})")
        return self


def check_sampling(temperature: float, top_k: int, top_p: float, prefix: str = "") -> None:
    """The sampling settings' bounds (of ``DecodeConfig`` and of ``search.sample_search``'s arguments);
    ConfigError (a ValueError) naming the setting, ``prefix`` before its name."""
    if temperature <= 0:
        raise ConfigError(f"{prefix}temperature must be positive, got {temperature} "
                          "(for the most probable tokens: greedy search)")
    if top_k < 0:
        raise ConfigError(f"{prefix}top_k must be >= 0 (0: no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"{prefix}top_p must be in (0, 1], got {top_p}")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def validate(self) -> "Config":
        """Checks that span keys; raises ConfigError. Returns self for chaining."""
        positive = {
            "vocab.size": self.vocab.size,
            "vocab.max_sentences": self.vocab.max_sentences,
            "model.embedding_size": self.model.embedding_size,
            "model.encoder_hidden_size": self.model.encoder_hidden_size,
            "model.hidden_size": self.model.hidden_size,
            "model.encoder_layers": self.model.encoder_layers,
            "model.decoder_layers": self.model.decoder_layers,
            "train.batch_tokens": self.train.batch_tokens,
            "train.valid_every": self.train.valid_every,
            "train.log_every": self.train.log_every,
            "train.accumulate": self.train.accumulate,
            "data.max_src_tokens": self.data.max_src_tokens,
            "data.max_trg_tokens": self.data.max_trg_tokens,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        if not 0.0 <= self.model.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.model.dropout}")
        if not 0.0 <= self.train.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.train.label_smoothing}")
        if self.train.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be positive, got {self.train.learning_rate}")
        self.decode.check()
        if self.model.attention == "dot" and self.model.hidden_size != 2 * self.model.encoder_hidden_size:
            raise ConfigError(
                "model.attention: dot scores the decoder state against encoder states directly, so "
                f"model.hidden_size ({self.model.hidden_size}) must equal 2 * model.encoder_hidden_size "
                f"({2 * self.model.encoder_hidden_size}); or use 'general' or 'additive'"
            )
        if not _DEVICE.match(self.train.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N (N a GPU number) or mps; "
                              f"got {self.train.device!r}")
        if self.train.guided_alignment_weight < 0:
            raise ConfigError(f"train.guided_alignment_weight must be >= 0, got {self.train.guided_alignment_weight}")
        if self.train.guided_alignment and self.model.attention == "none":
            raise ConfigError("train.guided_alignment trains attention: model.attention is none")
        if self.train.average_last > self.train.keep_checkpoints:
            raise ConfigError(f"train.average_last ({self.train.average_last}) averages kept checkpoints: set "
                              f"train.keep_checkpoints to at least {self.train.average_last}")
        if self.model.share_embeddings and not self.vocab.joint:
            raise ConfigError("model.share_embeddings needs vocab.joint: true (one vocabulary for both sides)")
        for key in ("max_steps", "max_time", "early_stopping_patience", "valid_max_sentences", "num_threads",
                    "checkpoint_every", "keep_checkpoints", "average_last"):
            if getattr(self.train, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self.train, key)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:[0-9]+|mps)$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_DURATION_SECONDS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number or a string such as "90s", "60m", "1.5h"."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} expects seconds or a duration like '60m', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"{key} expects seconds or a duration like '90s', '60m', '1h', got {value!r}")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def _coerce(value: Any, expected: Any, key: str) -> Any:
    """Check (and where lossless, convert) one value against a dataclass field type."""
    if key == "train.max_time":
        return parse_duration(value, key)
    origin = typing.get_origin(expected)
    if origin is Literal:
        choices = typing.get_args(expected)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    raise ConfigError(f"{key} expects {expected.__name__}, got {value!r} ({type(value).__name__})")


def _build_section(cls: type, values: Any, section: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"section '{section}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key '{section}.{key}'; valid keys of '{section}': {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: Any) -> Config:
    """Build and validate a Config from plain data (as YAML gives it)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    hints = typing.get_type_hints(Config)
    sections = [f.name for f in dataclasses.fields(Config)]
    kwargs = {}
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown section '{name}'; valid sections: {', '.join(sections)}")
        kwargs[name] = _build_section(hints[name], values, name)
    return Config(**kwargs).validate()


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to plain config data."""
    raw = {section: dict(values or {}) for section, values in (raw or {}).items()}
    for item in overrides:
        dotted, sep, text = item.partition("=")
        parts = dotted.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.max_steps=100")
        section, key = parts
        raw.setdefault(section, {})
        if raw[section] is None or not isinstance(raw[section], dict):
            raw[section] = {}
        raw[section][key] = yaml.safe_load(text) if text.strip() else ""
    return raw


def given_keys(path: Path | str | None = None, overrides: list[str] | None = None) -> set[str]:
    """The ``section.key`` names that a config file and its overrides set explicitly (what
    ``load_config`` does not fill in with defaults)."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return {f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict) for key in values}


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None) and apply ``--set`` overrides."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    try:
        return config_from_dict(apply_overrides(raw, overrides or []))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path is not None else str(error)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    """The plain data of a YAML config file; ConfigError if it cannot be read or is not a mapping."""
    raw: Any = {}
    try:
        raw = yaml.safe_load(path.read_bytes())  # PyYAML checks the encoding and names the position
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as error:  # a directory, no permission, ...
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    return raw

