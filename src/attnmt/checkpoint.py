"""A model directory on disk: safetensors weights, the YAML config, the SentencePiece models,
and the trainer state for ``--resume``. Nothing here ever unpickles anything.

    model_dir/
      config.yaml               everything needed to rebuild the model and its tokenizers
      model.safetensors         the best weights (what ``translate`` loads)
      spm.model                 joint SentencePiece model, or src.spm.model + trg.spm.model
      trainer_state.safetensors last weights, optimizer, scheduler, loss scaler, the RNGs of every
                                training process and the data position (one file, so it is
                                replaced atomically as a whole)
      trainer_state.previous.safetensors   the checkpoint before that one, kept in case the last is damaged
      metrics.jsonl             one line per log or validation event

Every file is written to a temporary name, flushed, fsynced and renamed over the old one, so a
crash at any moment leaves either the previous complete file or the new complete file; a failed
write (a full disk) is a CheckpointError naming the file, and the old file stays. Weights and
trainer state carry a checksum of their tensors, so a damaged file is an error, never a silently
wrong model.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import tempfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from attnmt.config import Config, ConfigError, load_config

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.safetensors"
METRICS_FILE = "metrics.jsonl"
JOINT_SPM = "spm.model"
SRC_SPM = "src.spm.model"
TRG_SPM = "trg.spm.model"
CHECKSUM_KEY = "attnmt_checksum"
_STATE_KEY = "attnmt_trainer_state"


class CheckpointError(RuntimeError):
    """A model directory or checkpoint file that cannot be used; the message names the file."""


def tokenizer_files(model_dir: Path, joint: bool) -> tuple[Path, Path]:
    """Paths of the source and target SentencePiece models (the same file when joint)."""
    model_dir = Path(model_dir)
    if joint:
        return model_dir / JOINT_SPM, model_dir / JOINT_SPM
    return model_dir / SRC_SPM, model_dir / TRG_SPM


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``; on any error the old file stays.

    An I/O failure (a full disk, a read-only directory) becomes a CheckpointError naming ``path``.
    """
    path = Path(path)
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _write_error(path, error) from error
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, path)
    except BaseException as error:
        tmp_path.unlink(missing_ok=True)
        if isinstance(error, OSError) or (isinstance(error, SafetensorError) and "I/O error" in str(error)):
            raise _write_error(path, error) from error
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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


def remove_run_files(model_dir: Path) -> None:
    """What ``--overwrite`` discards: the files of the run that was in ``model_dir`` before, so that
    none of them is mistaken for the new run's (the config first: without it the dir is no model)."""
    model_dir = Path(model_dir)
    for path in (model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE, model_dir / TRAINER_STATE_FILE,
                 previous_path(model_dir / TRAINER_STATE_FILE), model_dir / METRICS_FILE):
        path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(model: nn.Module, path: Path) -> None:
    """Weights as safetensors (shared tensors such as tied embeddings stored once), with a checksum."""
    tensors = _dedupe_shared({name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()})
    metadata = {"format": "pt", CHECKSUM_KEY: tensor_checksum(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; a damaged or ill-fitting file is a CheckpointError."""
    tensors, metadata = _read_safetensors(path, "weights")
    _verify_checksum(path, tensors, metadata)
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


def tensor_checksum(tensors: dict[str, torch.Tensor], extra: str = "") -> str:
    """BLAKE2b of names, dtypes, shapes and bytes (and ``extra`` text): catches damage inside a file,
    which safetensors' own checks (header, file size) cannot see."""
    digest = hashlib.blake2b(extra.encode("utf-8"), digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {what} {path} (truncated or corrupted?): {error}") from None


def _verify_checksum(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], extra: str = "") -> None:
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(tensors, extra) != expected:
        raise CheckpointError(f"{path} is corrupted: its contents do not match the checksum written with it")


def load_config_file(model_dir: Path) -> Config:
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{model_dir} is not a model directory: {CONFIG_FILE} is missing")
    try:
        return load_config(path)
    except ConfigError as error:
        raise CheckpointError(f"malformed config {path}: {error}") from None


# ----------------------------------------------------------------------------- trainer state


@dataclass
class TrainerState:
    """The non-tensor part of a training run's state, stored as JSON beside the tensors."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already trained on
    elapsed_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int = 0
    validations_without_improvement: int = 0
    nonfinite_steps: int = 0  # non-finite losses or gradients in a row
    # the throughput/loss window of the next "train" log line
    window_tokens: int = 0
    window_loss: float = 0.0
    window_seconds: float = 0.0
    world_size: int = 1  # training processes; the file holds the RNG state of each


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, plain_state = {}, {}
    for index, per_param in state_dict["state"].items():
        plain_state[str(index)] = {}
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain_state[str(index)][name] = value
    return tensors, {"state": plain_state, "param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(values) for i, values in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


RngState = tuple[dict[str, torch.Tensor], dict[str, Any]]  # (tensors, JSON-able rest)


def rng_state() -> RngState:
    """This process's torch (CPU and CUDA), NumPy and Python random states."""
    numpy_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(numpy_state[1].astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    plain = {"python": _to_json(random.getstate()), "numpy": [numpy_state[0], *numpy_state[2:]]}
    return tensors, plain


def _restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda_keys = sorted((key for key in tensors if key.startswith("rng.cuda.")), key=lambda key: int(key.split(".")[-1]))
    cuda_states = [tensors[key] for key in cuda_keys]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    name, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_from_json(plain["python"]))


def _to_json(value: Any) -> Any:
    return [_to_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def _rank_prefix(rank: int) -> str:
    """Where the RNG state of training process ``rank`` is kept: ``rng.*`` for the main one (as a
    one-process run keeps it), ``rank1.rng.*``, ``rank2.rng.*``, ... for the others."""
    return "" if rank == 0 else f"rank{rank}."


def save_trainer_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainerState,
    scaler: torch.amp.GradScaler | None = None, rng_states: list[RngState] | None = None,
) -> None:
    """One safetensors file: last weights, optimizer tensors, RNG tensors; JSON for the rest.

    rng_states: the ``rng_state()`` of every training process, in rank order (default: this
    process's only). The file it replaces is kept as ``previous_path(path)``."""
    tensors = {f"model.{name}": p.detach().cpu().contiguous() for name, p in model.state_dict().items()}
    tensors = _dedupe_shared(tensors)
    optimizer_tensors, optimizer_plain = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optimizer_tensors)
    rng_plain = []
    for rank, (rank_tensors, rank_plain) in enumerate(rng_states or [rng_state()]):
        tensors.update({_rank_prefix(rank) + key: value for key, value in rank_tensors.items()})
        rng_plain.append(rank_plain)
    plain = {
        "trainer": state.__dict__,
        "optimizer": optimizer_plain,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_plain[0],
        "rng_ranks": rng_plain[1:],
    }
    plain_json = json.dumps(plain)
    metadata = {_STATE_KEY: plain_json, CHECKSUM_KEY: tensor_checksum(tensors, plain_json)}
    _keep_previous(Path(path))
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def previous_path(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``trainer_state.previous.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _keep_previous(path: Path) -> None:
    """Make the current checkpoint the previous one (a hard link: no copy, no extra space)."""
    if not path.is_file():
        return
    previous = previous_path(path)
    link = path.with_name(f".{previous.name}.{os.getpid()}.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
        os.replace(link, previous)
    except OSError:  # no hard links on this file system: copy instead
        link.unlink(missing_ok=True)
        atomic_write(previous, lambda tmp: shutil.copyfile(path, tmp))


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory: store a tied weight once, under its first name."""
    seen: dict[int, str] = {}
    kept = {}
    for name, tensor in tensors.items():
        key = tensor.data_ptr()
        if key in seen and tensor.numel() > 0:
            continue
        seen[key] = name
        kept[name] = tensor
    return kept


def load_trainer_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    scaler: torch.amp.GradScaler | None = None, rank: int = 0,
) -> TrainerState:
    """Restore model, optimizer, scheduler, loss scaler and the RNG of training process ``rank`` from
    ``save_trainer_state``'s file (a process the saved run did not have keeps its RNG as it is).

    A truncated, damaged or foreign file is a CheckpointError naming it (and the previous checkpoint,
    which is kept). The whole file is read and verified before anything is restored."""
    path = Path(path)
    try:
        tensors, metadata = _read_safetensors(path, "trainer state")
        if _STATE_KEY not in metadata:
            raise CheckpointError(f"{path} is not an attnmt trainer state (no '{_STATE_KEY}' metadata)")
        _verify_checksum(path, tensors, metadata, extra=metadata[_STATE_KEY])
        plain = json.loads(metadata[_STATE_KEY])
    except (CheckpointError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{error}{_previous_hint(path)}") from None
    try:
        model_state = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
        missing, unexpected = model.load_state_dict(model_state, strict=False)
        if unexpected or _really_missing(model, list(missing)):
            raise CheckpointError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")
        optimizer.load_state_dict(_unflatten_optimizer(tensors, plain["optimizer"]))
        if scheduler is not None and plain["scheduler"] is not None:
            scheduler.load_state_dict(plain["scheduler"])
        if scaler is not None and scaler.is_enabled() and plain.get("scaler"):
            scaler.load_state_dict(plain["scaler"])
        rng_plain = [plain["rng"], *plain.get("rng_ranks", [])]
        if rank < len(rng_plain):
            prefix = _rank_prefix(rank)
            _restore_rng({key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix + "rng.")},
                         rng_plain[rank])
        known = {f.name for f in dataclasses.fields(TrainerState)}
        return TrainerState(**{key: value for key, value in plain["trainer"].items() if key in known})
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} does not fit this model, optimizer or schedule: {error!r}") from None


def _previous_hint(path: Path) -> str:
    previous = previous_path(path)
    if not previous.is_file():
        return ""
    return f". The previous checkpoint {previous} is kept: move it to {path} to resume from it"
