"""A model directory on disk: safetensors weights, the YAML config, the SentencePiece models.
Nothing here ever unpickles anything.

    model_dir/
      config.yaml               everything needed to rebuild the model and its tokenizers
      model.safetensors         the best weights (what ``translate`` loads)
      spm.model                 joint SentencePiece model, or src.spm.model + trg.spm.model
      trainer_state.safetensors the trainer state for ``--resume`` (attnmt.training.state)
      trainer_state.previous.safetensors   the checkpoint before that one
      shortlist.safetensors     the vocabulary shortlist (``attnmt shortlist``), if built
      checkpoints/              the weights of the last ``train.keep_checkpoints`` validations
      data/                     the prepared training data: the token store and what it was built from
      metrics.jsonl             one line per log or validation event

Every file is written to a temporary name, flushed, fsynced and renamed over the old one, so a
crash at any moment leaves either the previous complete file or the new complete file; a failed
write (a full disk) is a CheckpointError naming the file, and the old file stays. Weights carry a
checksum of their tensors, so a damaged file is an error, never a silently wrong model.

torch is imported only by the functions that handle tensors: ``atomic_write`` serves commands that
need no model (``attnmt data``) without it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from attnmt.config import Config, load_config
from attnmt.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from attnmt.data.tokenizer import SubwordTokenizer
    from attnmt.model import Seq2Seq

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.safetensors"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
SHORTLIST_FILE = "shortlist.safetensors"  # attnmt shortlist: the target pieces likely for each source piece
DATA_DIR = "data"  # the prepared training data: tokenizer fingerprint and token store (attnmt.training.prepare)
JOINT_SPM = "spm.model"
SRC_SPM = "src.spm.model"
TRG_SPM = "trg.spm.model"
CHECKSUM_KEY = "attnmt_checksum"

__all__ = ["CheckpointError"]  # re-exported: the error of this module lives in attnmt.errors


def tokenizer_files(model_dir: Path, joint: bool) -> tuple[Path, Path]:
    """Paths of the source and target SentencePiece models (the same file when joint)."""
    model_dir = Path(model_dir)
    if joint:
        return model_dir / JOINT_SPM, model_dir / JOINT_SPM
    return model_dir / SRC_SPM, model_dir / TRG_SPM


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``; on any error the old file stays.

    The temporary file sits beside ``path`` as ``.{name}.{pid}.{random}.tmp`` (what
    ``remove_stale_temporaries`` cleans up after a kill) and gets the usual umask mode.
    An I/O failure (a full disk, a read-only directory) becomes a CheckpointError naming ``path``.
    """
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp_path.open("xb").close()
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, path)
    except BaseException as error:
        tmp_path.unlink(missing_ok=True)
        safetensors_io = type(error).__name__ == "SafetensorError" and "I/O error" in str(error)
        if isinstance(error, OSError) or safetensors_io:
            raise _write_error(path, error) from error
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _write_error(path: Path, error: BaseException) -> CheckpointError:
    disk_full = getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)
    reason = "no space left on the device" if disk_full else str(error)
    kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
    return CheckpointError(f"cannot write {path}: {reason}; {kept}")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that a killed ``atomic_write`` left in ``directory``."""
    stale = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def previous_path(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``trainer_state.previous.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def remove_run_files(model_dir: Path) -> None:
    """What ``--overwrite`` discards: the files of the run that was in ``model_dir`` before, so that
    none of them is mistaken for the new run's (the config first: without it the dir is no model)."""
    model_dir = Path(model_dir)
    for path in (model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE, model_dir / TRAINER_STATE_FILE,
                 previous_path(model_dir / TRAINER_STATE_FILE), model_dir / METRICS_FILE, model_dir / SHORTLIST_FILE):
        path.unlink(missing_ok=True)
    for path in sorted((model_dir / CHECKPOINTS_DIR).glob("*.safetensors")):
        path.unlink()


# ----------------------------------------------------------------------------- weights


def save_weights(model: nn.Module, path: Path) -> None:
    """Weights as safetensors (shared tensors such as tied embeddings stored once), with a checksum."""
    tensors = dedupe_shared({name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()})
    save_tensors(path, tensors)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 checksum_extra: str = "") -> None:
    """A safetensors file with a checksum of its tensors (and of ``checksum_extra``), written atomically."""
    from safetensors.torch import save_file

    metadata = {"format": "pt", **(metadata or {}), CHECKSUM_KEY: tensor_checksum(tensors, checksum_extra)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, checksum verified; a damaged file is a CheckpointError."""
    tensors, metadata = read_safetensors(path, "weights")
    verify_checksum(path, tensors, metadata)
    return tensors


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; a damaged or ill-fitting file is a CheckpointError."""
    load_state(model, read_weights(path), path)


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict`` for tensors read from ``path`` (tied weights stored once);
    tensors that do not fit the model are a CheckpointError naming ``path``."""
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # shapes differ
        raise CheckpointError(f"{path} does not fit the model in its config: {error}") from None
    if unexpected or _really_missing(model, missing):
        raise CheckpointError(
            f"{path} does not fit the model in its config: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )


def _really_missing(model: nn.Module, missing: list[str]) -> list[str]:
    """Tied parameters are stored once; a name missing only because its twin was stored is fine."""
    present_ids = {id(p) for n, p in model.named_parameters() if n not in missing}
    return [n for n, p in model.named_parameters(remove_duplicate=False) if n in missing and id(p) not in present_ids]


def dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory: store a tied weight once, under its first name."""
    seen: set[int] = set()
    kept = {}
    for name, tensor in tensors.items():
        key = tensor.data_ptr()
        if key in seen and tensor.numel() > 0:
            continue
        seen.add(key)
        kept[name] = tensor
    return kept


def tensor_checksum(tensors: dict[str, torch.Tensor], extra: str = "") -> str:
    """BLAKE2b of names, dtypes, shapes and bytes (and ``extra`` text): catches damage inside a file,
    which safetensors' own checks (header, file size) cannot see."""
    import torch

    digest = hashlib.blake2b(extra.encode("utf-8"), digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; unreadable is a CheckpointError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {what} {path} (truncated or corrupted?): {error}") from None


def verify_checksum(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], extra: str = "") -> None:
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(tensors, extra) != expected:
        raise CheckpointError(f"{path} is corrupted: its contents do not match the checksum written with it")


# ----------------------------------------------------------------------------- kept checkpoints, averaging


def checkpoint_path(model_dir: Path, step: int) -> Path:
    """Where the weights of the validation at ``step`` are kept: ``checkpoints/step_000004500.safetensors``."""
    return Path(model_dir) / CHECKPOINTS_DIR / f"step_{step:09d}.safetensors"


def kept_checkpoints(model_dir: Path) -> list[Path]:
    """The kept checkpoints of a model directory, oldest first."""
    return sorted((Path(model_dir) / CHECKPOINTS_DIR).glob("step_*.safetensors"))


def keep_checkpoint(model: nn.Module, model_dir: Path, step: int, keep: int) -> Path:
    """Save the weights of step ``step`` among the kept checkpoints and delete all but the last
    ``keep`` (written first, deleted after: a crash in between leaves one more, never one less)."""
    path = checkpoint_path(model_dir, step)
    path.parent.mkdir(exist_ok=True)
    save_weights(model, path)
    for old in kept_checkpoints(model_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights in ``paths`` (each verified), accumulated in float64.
    Files that do not hold the same tensors, or tensors of other shapes, are a CheckpointError
    naming them."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    reference, dtypes = paths[0], {}
    for path in paths:
        tensors = read_weights(path)
        dtypes = dtypes or {name: tensor.dtype for name, tensor in tensors.items()}
        if total and set(tensors) != set(total):
            different = sorted(set(tensors) ^ set(total))
            raise CheckpointError(f"{path} and {reference} hold different weights ({', '.join(different[:5])}): "
                                  "only checkpoints of one model can be averaged")
        for name, tensor in tensors.items():
            if name in total and total[name].shape != tensor.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, {reference} has "
                                      f"{tuple(total[name].shape)}: only checkpoints of one model can be averaged")
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (value / len(paths)).to(dtypes[name]) for name, value in total.items()}


def average_models(sources: list[Path], out_dir: Path, last: int = 0) -> list[Path]:
    """Write a model directory ``out_dir`` whose weights are the mean of the sources' (its config
    and tokenizers those of the first source). A source is a model directory (its kept checkpoints,
    only the ``last`` of them if given, or else its best weights) or a weights file in one. Every
    source must be a model of the same architecture and vocabulary. Returns the files averaged."""
    model_dirs, paths = [], []
    for source in map(Path, sources):
        if source.is_dir():
            kept = kept_checkpoints(source)
            chosen = (kept[-last:] if last else kept) or [source / WEIGHTS_FILE]
            model_dirs.append(source)
        else:
            chosen = [source]
            model_dirs.append(source.parent.parent if source.parent.name == CHECKPOINTS_DIR else source.parent)
        paths += chosen
    config = load_config_file(model_dirs[0])
    digest = tokenizers_digest(*load_tokenizers(model_dirs[0], config.vocab.joint))
    for model_dir in model_dirs[1:]:
        other = load_config_file(model_dir)
        if (other.model, other.vocab) != (config.model, config.vocab) or \
                tokenizers_digest(*load_tokenizers(model_dir, other.vocab.joint)) != digest:
            raise CheckpointError(f"{model_dir} and {model_dirs[0]} are not the same model (their model or vocab "
                                  "settings or their tokenizers differ): only one model's weights can be averaged")
    tensors = average_weights(paths)
    copy_model_files(model_dirs[0], out_dir, config)
    save_tensors(Path(out_dir) / WEIGHTS_FILE, tensors)
    return paths


# ----------------------------------------------------------------------------- the shortlist


def tokenizers_digest(src_tokenizer: SubwordTokenizer, trg_tokenizer: SubwordTokenizer) -> str:
    """What identifies a model's vocabularies: the SHA-256 of its SentencePiece models."""
    return hashlib.sha256(src_tokenizer.serialized + b"|" + trg_tokenizer.serialized).hexdigest()


def save_shortlist(model_dir: Path, lists: torch.Tensor, frequent: torch.Tensor, digest: str,
                   about: dict[str, str]) -> Path:
    """Write a model directory's shortlist (attnmt.model.shortlist) with the digest of the tokenizers
    it was built for and how it was built (``about``, kept as metadata)."""
    import torch

    path = Path(model_dir) / SHORTLIST_FILE
    save_tensors(path, {"lists": lists.to(torch.int32).contiguous(), "frequent": frequent.to(torch.int32).contiguous()},
                 metadata={"tokenizers": digest, **about})
    return path


def load_shortlist(model_dir: Path, digest: str, src_vocab: int, trg_vocab: int):
    """The shortlist of a model directory; a missing, damaged or mismatched one (built for other
    tokenizers, ids out of range) is a CheckpointError naming the file."""
    from attnmt.model.shortlist import Shortlist

    path = Path(model_dir) / SHORTLIST_FILE
    if not path.exists():
        raise CheckpointError(f"{model_dir} has no {SHORTLIST_FILE}: build one with attnmt shortlist {model_dir} ...")
    tensors, metadata = read_safetensors(path, "shortlist")
    verify_checksum(path, tensors, metadata)
    if metadata.get("tokenizers") != digest:
        raise CheckpointError(f"{path} was built for other tokenizers than the model's: build it again")
    lists, frequent = tensors.get("lists"), tensors.get("frequent")
    if lists is None or frequent is None or lists.dim() != 2 or lists.size(0) != src_vocab or frequent.dim() != 1:
        raise CheckpointError(f"{path} is not a shortlist of this model (expected 'lists' of {src_vocab} rows and "
                              "'frequent')")
    largest = max([int(tensor.max()) for tensor in (lists, frequent) if tensor.numel()], default=-1)
    if largest >= trg_vocab:
        raise CheckpointError(f"{path} names target piece {largest}, but the vocabulary has {trg_vocab}")
    return Shortlist(lists.long(), frequent.long())


# ----------------------------------------------------------------------------- loading a model


def load_config_file(model_dir: Path) -> Config:
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{model_dir} is not a model directory: {CONFIG_FILE} is missing")
    try:
        return load_config(path)
    except ConfigError as error:
        raise CheckpointError(f"malformed config {path}: {error}") from None


def load_tokenizers(model_dir: Path, joint: bool) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    """The source and target tokenizers of a model directory (one object twice when joint); a
    missing or unreadable tokenizer model is a CheckpointError naming it."""
    from attnmt.data.tokenizer import SubwordTokenizer

    src_path, trg_path = tokenizer_files(model_dir, joint)

    def load(path: Path) -> SubwordTokenizer:
        if not path.exists():
            raise CheckpointError(f"{model_dir} lacks its tokenizer model {path.name}")
        try:
            return SubwordTokenizer.load(path)
        except (OSError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"cannot load the tokenizer model {path}: {error}") from None

    src = load(src_path)
    return src, src if trg_path == src_path else load(trg_path)


def build_model(config: Config, src_tokenizer: SubwordTokenizer, trg_tokenizer: SubwordTokenizer) -> Seq2Seq:
    """The model a config describes, freshly initialised, for these tokenizers' vocabularies."""
    from attnmt.model import Seq2Seq

    return Seq2Seq.from_config(config.model, src_tokenizer.vocab_size, trg_tokenizer.vocab_size)


def copy_model_files(source: Path, target: Path, config: Config) -> None:
    """A new model directory's config and tokenizers, those of ``source`` (atomically written)."""
    Path(target).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(target) / CONFIG_FILE, config.to_yaml())
    copy_tokenizers(source, target, config.vocab.joint)


def copy_tokenizers(source: Path, target: Path, joint: bool) -> None:
    """The SentencePiece models of ``source`` into ``target`` (atomically written)."""
    for path in dict.fromkeys(tokenizer_files(source, joint)):
        if not path.is_file():
            raise CheckpointError(f"{source} lacks its tokenizer model {path.name}")
        atomic_write_bytes(Path(target) / path.name, path.read_bytes())


def load_model(model_dir: Path, weights: Path | None = None) -> tuple[Config, Seq2Seq, SubwordTokenizer, SubwordTokenizer]:
    """Config, model (with ``weights``, default the best ones, ``model.safetensors``) and tokenizers
    of a model directory (safetensors + YAML + SentencePiece; never a pickle)."""
    model_dir = Path(model_dir)
    config = load_config_file(model_dir)
    src_tokenizer, trg_tokenizer = load_tokenizers(model_dir, config.vocab.joint)
    model = build_model(config, src_tokenizer, trg_tokenizer)
    weights = model_dir / WEIGHTS_FILE if weights is None else Path(weights)
    if not weights.exists():
        raise CheckpointError(f"{model_dir} lacks its weights {weights.name}")
    load_weights(model, weights)
    return config, model, src_tokenizer, trg_tokenizer
