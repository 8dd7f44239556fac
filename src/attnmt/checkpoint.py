"""A model directory on disk: safetensors weights, the YAML config, the SentencePiece models,
and the trainer state for ``--resume``. Nothing here ever unpickles anything.

    model_dir/
      config.yaml               everything needed to rebuild the model and its tokenizers
      model.safetensors         the best weights (what ``translate`` loads)
      spm.model                 joint SentencePiece model, or src.spm.model + trg.spm.model
      trainer_state.safetensors last weights, optimizer, scheduler, RNG and data position (one file,
                                so it is replaced atomically as a whole)
      metrics.jsonl             one line per log or validation event

Every file is written to a temporary name, flushed, fsynced and renamed over the old one, so a
crash at any moment leaves either the previous complete file or the new complete file.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from attnmt.config import Config, ConfigError, load_config

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.safetensors"
METRICS_FILE = "metrics.jsonl"
JOINT_SPM = "spm.model"
SRC_SPM = "src.spm.model"
TRG_SPM = "trg.spm.model"


class CheckpointError(RuntimeError):
    """A model directory or checkpoint file that cannot be used; the message names the file."""


def tokenizer_files(model_dir: Path, joint: bool) -> tuple[Path, Path]:
    """Paths of the source and target SentencePiece models (the same file when joint)."""
    model_dir = Path(model_dir)
    if joint:
        return model_dir / JOINT_SPM, model_dir / JOINT_SPM
    return model_dir / SRC_SPM, model_dir / TRG_SPM


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``; on any error the old file stays."""
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(model: nn.Module, path: Path) -> None:
    """Weights as safetensors (shared tensors such as tied embeddings stored once)."""
    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"cannot read weights from {path}: {error}") from None
    if unexpected or _really_missing(model, missing):
        raise CheckpointError(
            f"{path} does not fit the model in its config: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )


def _really_missing(model: nn.Module, missing: list[str]) -> list[str]:
    """Tied parameters are stored once; a name missing only because its twin was stored is fine."""
    present_ids = {id(p) for n, p in model.named_parameters() if n not in missing}
    return [n for n, p in model.named_parameters(remove_duplicate=False) if n in missing and id(p) not in present_ids]


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
    nonfinite_steps: int = 0


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


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    numpy_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(numpy_state[1].astype(np.int64))}
    plain = {"python": _to_json(random.getstate()), "numpy": [numpy_state[0], *numpy_state[2:]]}
    return tensors, plain


def _restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    name, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_from_json(plain["python"]))


def _to_json(value: Any) -> Any:
    return [_to_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def save_trainer_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainerState
) -> None:
    """One safetensors file: last weights, optimizer tensors, RNG tensors; JSON for the rest."""
    tensors = {f"model.{name}": p.detach().cpu().contiguous() for name, p in model.state_dict().items()}
    tensors = _dedupe_shared(tensors)
    optimizer_tensors, optimizer_plain = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_plain = _rng_state()
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    plain = {
        "trainer": state.__dict__,
        "optimizer": optimizer_plain,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_plain,
    }
    metadata = {"attnmt_trainer_state": json.dumps(plain)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


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
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG from ``save_trainer_state``'s file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            plain = json.loads(handle.metadata()["attnmt_trainer_state"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"cannot read trainer state {path} (truncated or corrupted?): {error}") from None
    model_state = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
    missing, unexpected = model.load_state_dict(model_state, strict=False)
    if unexpected or _really_missing(model, list(missing)):
        raise CheckpointError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, plain["optimizer"]))
    if scheduler is not None and plain["scheduler"] is not None:
        scheduler.load_state_dict(plain["scheduler"])
    _restore_rng(tensors, plain["rng"])
    return TrainerState(**plain["trainer"])
