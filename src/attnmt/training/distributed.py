"""Training on several processes, on one machine or several, with PyTorch's DistributedDataParallel.

torchrun (``python -m torch.distributed.run``) starts the processes and gives each one RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. ``start_worker`` reads them, picks the process's
device and joins the process group: NCCL between GPUs, gloo between CPUs. A process started
without torchrun is the only one, and nothing here communicates.

How the training loop (``loop.py``) shares the work:

- every process builds the same batches for an epoch (``token_batches`` depends only on the seed
  and the epoch); each optimizer step takes the next ``world_size * accumulate`` of them
  (``step_groups``), and process r trains on the r-th, (r + world_size)-th, ... of those
  (``Worker.shard``);
- the loss of every batch is divided by the target tokens of the whole step and the gradients are
  summed over the processes, so W processes take the step that one process would take by
  accumulating the gradients of the same batches;
- process 0, the main one, validates and writes the model directory, the metrics and the log; the
  others receive its validation results (``Worker.broadcast``), so every process takes the same
  decisions (learning rate, early stopping, when to stop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from attnmt.runtime import resolve_device

T = TypeVar("T")

# How long a process waits in a collective for the others, e.g. for the main process to validate.
# NCCL's own default is 10 minutes, short for a large validation set; gloo's is 30.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Worker:
    """This process: number ``rank`` of ``world_size``, training on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # ``start_worker`` created the process group, so ``stop_worker`` destroys it

    @property
    def is_main(self) -> bool:
        """The process that validates and writes files and logs."""
        return self.rank == 0

    def shard(self, group: list[T]) -> list[T]:
        """This process's part of the batches of one optimizer step."""
        return group[self.rank :: self.world_size]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that training steps call: DDP around ``model`` when there are several processes
        (it starts by copying the main process's weights to all), ``model`` itself otherwise."""
        if self.world_size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def where(self) -> str:
        """Where training runs, for the log: "on cpu", "on 2 processes (gloo; the main one on cpu)"."""
        if self.world_size == 1:
            return f"on {self.device}"
        backend = "NCCL" if self.device.type == "cuda" else "gloo"
        return f"on {self.world_size} processes ({backend}; the main one on {self.device})"

    def agree(self, loss: torch.Tensor, elapsed: float) -> tuple[float, float]:
        """A step's ``loss`` summed over the processes and their mean ``elapsed`` seconds, in one
        collective: the same numbers on every process."""
        if self.world_size == 1:
            return loss.item(), elapsed
        # float32 as the loss itself (a sum of the same float32 terms, whichever process holds which)
        totals = torch.stack([loss, torch.tensor(elapsed, dtype=loss.dtype, device=loss.device)])
        loss_sum, elapsed_sum = self.all_sum(totals).tolist()
        return loss_sum, elapsed_sum / self.world_size

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world_size > 1 and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        elif self.world_size > 1:
            dist.barrier()

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` (on this process's device) over the processes, in place."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, value: T) -> T:
        """The main process's ``value``, on every process (it goes through pickle, so only ever pass
        what this program computed, never what it read from a file)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, in rank order, on every process (through pickle, as ``broadcast``)."""
        if self.world_size == 1:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def start_worker(device_spec: str) -> Worker:
    """This process's Worker: joins the process group when torchrun started several processes (or
    uses the one the caller has set up), and picks the device ``train.device = device_spec`` means."""
    owns_group = not (dist.is_available() and dist.is_initialized())
    if owns_group:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    else:
        world_size, rank = dist.get_world_size(), dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world_size > 1 else None
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":  # what "cuda" means from now on; before NCCL starts, so that it uses this GPU
        torch.cuda.set_device(device)
    if world_size == 1:
        return Worker(device=device)
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return Worker(rank, world_size, device, owns_group)


def stop_worker(worker: Worker, finished: bool = False) -> None:
    """Leave the process group this worker created. ``finished``: every process ended its run normally,
    so all wait for each other first, and none tears its Gloo connections down while another still
    writes its last checkpoint (the likely cause of a rank dying at exit with "terminate called without
    an active exception", seen once in CI and not reproduced in 21 reruns); after an error nobody
    waits, as the others may never arrive."""
    if worker.owns_group and dist.is_initialized():
        if finished:
            worker.barrier()
        dist.destroy_process_group()


def step_groups(batches: list[T], start: int, per_step: int) -> Iterator[list[T]]:
    """``batches[start:]`` in groups of ``per_step``, one optimizer step each. The fewer than
    ``per_step`` batches left at the end are dropped, so that every step is alike whether its batches
    are spread over processes or accumulated (the batches are shuffled anew every epoch, so the ones
    dropped change too); with ``per_step`` 1 none is."""
    for first in range(start, len(batches) - per_step + 1, per_step):
        yield batches[first : first + per_step]
