"""The trainer state, what ``--resume`` continues from: last weights, optimizer, scheduler, loss
scaler, the RNGs of every training process and the data position, in one safetensors file (so that it
is replaced atomically as a whole) with the non-tensor part as JSON in its metadata.

The file it replaces is kept as ``trainer_state.previous.safetensors``, in case the last is damaged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnmt.errors import CheckpointError
from attnmt.store import (
    atomic_write,
    dedupe_shared,
    load_state,
    previous_path,
    read_safetensors,
    save_tensors,
    verify_checksum,
)

_STATE_KEY = "attnmt_trainer_state"


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
    tensors = dedupe_shared(tensors)
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
    _keep_previous(Path(path))
    save_tensors(path, tensors, metadata={_STATE_KEY: plain_json}, checksum_extra=plain_json)


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
        tensors, metadata = read_safetensors(path, "trainer state")
        if _STATE_KEY not in metadata:
            raise CheckpointError(f"{path} is not an attnmt trainer state (no '{_STATE_KEY}' metadata)")
        verify_checksum(path, tensors, metadata, extra=metadata[_STATE_KEY])
        plain = json.loads(metadata[_STATE_KEY])
    except (CheckpointError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{error}{_previous_hint(path)}") from None
    try:
        load_state(model, {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")},
                   path)
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
