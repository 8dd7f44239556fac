"""Training on several processes: sharding, gradient accumulation, and DistributedDataParallel over
gloo on the CPU. One test starts training as users do, ``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m attnmt train`` (torchrun); the others fork two processes that call ``train``
with the environment torchrun gives (which is faster: the children need not import torch again)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from attnmt.store import TRAINER_STATE_FILE, WEIGHTS_FILE, previous_path
from attnmt.config import Config, ModelConfig
from attnmt.data.batching import collate
from attnmt.runtime import MixedPrecision
from attnmt.training.distributed import Worker, step_groups
from attnmt.model import Seq2Seq
from attnmt.training.loop import TrainingError, accumulate_gradients, batch_loss, train
from toy import StepClock, toy_config, write_toy_corpus

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def quiet(message: str) -> None:
    pass


# ---- sharding and accumulation, in one process ----------------------------------------------------


def test_each_step_takes_the_next_group_of_batches_and_each_process_its_share():
    batches = [[i] for i in range(7)]
    assert list(step_groups(batches, 0, 1)) == [[b] for b in batches]  # one process: every batch, as before
    assert list(step_groups(batches, 0, 2)) == [batches[0:2], batches[2:4], batches[4:6]]  # the 7th waits a step
    assert list(step_groups(batches, 4, 2)) == [batches[4:6]]  # resuming at a batch position
    assert list(step_groups(batches, 0, 4)) == [batches[0:4]]
    group = batches[0:4]  # 2 processes x accumulate 2
    assert [Worker(rank, 2).shard(group) for rank in (0, 1)] == [[[0], [2]], [[1], [3]]]


def test_accumulated_gradients_are_those_of_the_union_of_the_batches():
    """Normalised by the target tokens of the whole step, two batches accumulated give the gradient of
    one batch holding both (up to float32 rounding: the padded shapes differ)."""
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=16, encoder_hidden_size=16, hidden_size=32, dropout=0.0),
                                30, 30)
    sources, targets = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]], [[10, 11], [12, 13, 14], [5]]
    first, second = collate(sources[:2], targets[:2], [0, 1]), collate(sources[2:], targets[2:], [2])
    step_tokens = first.n_trg_tokens + second.n_trg_tokens
    amp = MixedPrecision.create("fp32", torch.device("cpu"))
    loss = accumulate_gradients(model, [first, second], step_tokens, 1, amp, label_smoothing=0.1)
    accumulated = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    union = batch_loss(model, collate(sources, targets, [0, 1, 2]), 0.1)
    (union / step_tokens).backward()
    torch.testing.assert_close(loss, union.detach(), rtol=1e-6, atol=1e-5)
    for (name, parameter), got in zip(model.named_parameters(), accumulated):
        torch.testing.assert_close(got, parameter.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_too_few_batches_for_one_step_is_a_clear_error(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=30)
    with pytest.raises(TrainingError, match=r"fewer than the 50 that one step takes.*train.accumulate"):
        train(toy_config(train_prefix, valid_prefix, accumulate=50), tmp_path / "model", log=quiet)


# ---- two processes: started by torchrun, or forked with the environment torchrun gives ---------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, str]:
    return write_toy_corpus(tmp_path_factory.mktemp("distributed") / "data", n_train=200)


def ddp_config(corpus, dropout: float = 0.0, **train_settings) -> Config:
    """20 steps of 2 batches, checkpoints every 5 steps, validation every 10."""
    settings = dict(max_steps=20, valid_every=10, checkpoint_every=5, log_every=5, device="cpu")
    settings.update(train_settings)
    config = toy_config(*corpus, **settings)
    config.model.dropout = dropout
    return config.validate()


def torchrun_train(config: Config, model_dir: Path) -> str:
    """``attnmt train`` on two processes started by torchrun; returns its log (stderr)."""
    config_file = model_dir.with_suffix(".yaml")
    config_file.write_text(config.to_yaml(), encoding="utf-8")
    command = [*TORCHRUN, "-m", "attnmt", "train", str(config_file), "--model-dir", str(model_dir), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)  # OMP_NUM_THREADS=1 (conftest)
    assert result.returncode == 0, result.stderr
    return result.stderr


def train_on_two_processes(config: Config, model_dir: Path, resume: bool = False,
                           second_model_dir: Path | None = None, fast_clock: bool = False, timeout: float = 120) -> None:
    """``train`` in two forked processes that find each other as torchrun's do. The second uses
    ``second_model_dir`` if given (as if the machines shared no file system) and, with
    ``fast_clock``, clocks that advance a fixed time per reading, the second one's 30% faster (so that
    a time budget is the same steps on any machine). If one fails, torch.multiprocessing stops the other
    and raises its error here; if they hang, the test fails."""
    with socket.socket() as probe:  # a free port for the main process's rendezvous store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model_dirs = [model_dir, second_model_dir or model_dir]
    processes = torch.multiprocessing.start_processes(_train_as_rank, args=(port, config, model_dirs, resume, fast_clock),
                                                      nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + timeout
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail(f"the two processes did not finish within {timeout} s: waiting for each other?")


def _train_as_rank(rank: int, port: int, config: Config, model_dirs: list[Path], resume: bool,
                   fast_clock: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if fast_clock:  # this forked process's own time module: a clock of steps, 30% fast in the second process
        time.perf_counter = StepClock(0.013 if rank == 1 else 0.01)
    try:
        train(config, model_dirs[rank], resume=resume, progress=False, log=quiet)
    except Exception as error:  # kept: when one process fails, which error is reported first is a race
        Path(f"{model_dirs[rank]}.rank{rank}.error").write_text(str(error), encoding="utf-8")
        raise


def metrics(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def saved_world_size(model_dir: Path) -> int:
    with safe_open(str(model_dir / TRAINER_STATE_FILE), framework="pt") as handle:
        return json.loads(handle.metadata()["attnmt_trainer_state"])["trainer"]["world_size"]


# Parameters are O(0.1-1) and float32 (eps 1.2e-7). Both runs do the same arithmetic: each process's
# loss is scaled by world_size / step_tokens = 2 * (1 / step_tokens), DDP divides the gradients by 2
# and adds the two (scaling by 2 is exact in binary floating point, and a sum of two terms does not
# depend on their order), so the expected difference is none at all: 0.0 is what this machine gives.
# The tolerance only leaves room for a last-bit difference (another gloo or kernel build summing in
# another order); a real fault (a batch lost, counted twice or normalised wrongly, gradients not
# synchronised) moves the parameters by 1e-3 or more within 20 steps.
TOLERANCE = 1e-6


def test_two_processes_reach_the_parameters_of_one_process_accumulating_the_same_batches(tmp_path, corpus):
    config = ddp_config(corpus)  # no dropout: its masks are drawn differently by two processes than by one
    log = torchrun_train(config, tmp_path / "two")
    config.train.accumulate = 2  # one process, the same 2 batches per step
    train(config, tmp_path / "one", progress=False, log=quiet)

    one, two = load_file(tmp_path / "one" / TRAINER_STATE_FILE), load_file(tmp_path / "two" / TRAINER_STATE_FILE)
    learnt = [key for key in one if key.startswith(("model.", "optimizer.")) and one[key].is_floating_point()]
    assert learnt and set(learnt) <= set(two)
    worst = max((one[key].double() - two[key].double()).abs().max().item() for key in learnt)
    assert worst <= TOLERANCE, f"largest difference {worst:.3g}"
    five_steps_before = load_file(previous_path(tmp_path / "two" / TRAINER_STATE_FILE))  # step 15
    moved = max((two[key].double() - five_steps_before[key].double()).abs().max().item() for key in learnt)
    assert moved > 1000 * TOLERANCE  # the tolerance is far below what a few steps change

    # the same training loss logged, once: only the main process writes metrics and logs
    losses = {name: [(e["step"], e["loss"]) for e in metrics(tmp_path / name) if e["event"] in ("train", "valid")]
              for name in ("one", "two")}
    assert [step for step, _ in losses["two"]] == [5, 10, 10, 15, 20, 20]
    assert [loss for _, loss in losses["two"]] == pytest.approx([loss for _, loss in losses["one"]], rel=1e-6)
    assert log.count("training stopped") == 1 and "training on 2 processes (gloo" in log
    assert saved_world_size(tmp_path / "two") == 2 and "rank1.rng.torch" in two
    # one token store, prepared once by the main process and mapped by both
    assert log.count("prepared into") == 1 and (tmp_path / "two" / "data" / "train" / "meta.json").is_file()
    assert not list((tmp_path / "two" / "data").glob(".*.tmp"))


def test_two_processes_resume_exactly_where_they_stopped(tmp_path, corpus):
    """With dropout, each process's random state matters: a run stopped at step 10 and resumed on two
    processes reaches bit for bit the state of a run never stopped."""
    config = ddp_config(corpus, dropout=0.3)
    train_on_two_processes(config, tmp_path / "whole")
    config.train.max_steps = 10
    train_on_two_processes(config, tmp_path / "resumed")
    shutil.copytree(tmp_path / "resumed", tmp_path / "on one process")
    config.train.max_steps = 20
    train_on_two_processes(config, tmp_path / "resumed", resume=True)

    assert [(e["event"], e["step"]) for e in metrics(tmp_path / "resumed") if e["event"] in ("resume", "stop")] == [
        ("stop", 10), ("resume", 10), ("stop", 20)]  # written once, by the main process
    assert saved_world_size(tmp_path / "resumed") == 2
    for name in (TRAINER_STATE_FILE, WEIGHTS_FILE):
        whole, resumed = load_file(tmp_path / "whole" / name), load_file(tmp_path / "resumed" / name)
        assert whole.keys() == resumed.keys()
        assert [key for key in whole if not torch.equal(whole[key], resumed[key])] == [], name
    history = {name: [(e["event"], e["step"], e["loss"]) for e in metrics(tmp_path / name) if e["event"] in ("train", "valid")]
               for name in ("whole", "resumed")}
    assert history["resumed"] == history["whole"]  # the training losses logged and the validations

    # one process can go on from where two stopped (with its own step size: another run, not the same)
    messages: list[str] = []
    result = train(config, tmp_path / "on one process", resume=True, progress=False, log=messages.append)
    assert result.steps == 20 and saved_world_size(tmp_path / "on one process") == 1
    assert any("written by 2 process(es), this run has 1: the data position carries over" in m for m in messages)


def test_two_processes_stop_together_when_the_time_is_up(tmp_path, corpus):
    """Their clocks differ (here by far: one runs 30% fast); they stop on the mean of the two, at the
    same step. A process that stopped alone would leave the other waiting for it forever."""
    config = ddp_config(corpus, max_steps=0, max_time=1.0, valid_every=10_000, checkpoint_every=0)
    train_on_two_processes(config, tmp_path / "model", fast_clock=True, timeout=60)
    stop = [e for e in metrics(tmp_path / "model") if e["event"] == "stop"]
    assert len(stop) == 1 and stop[0]["reason"] == "reached train.max_time=1s" and stop[0]["step"] > 10


def test_machines_that_share_no_file_system_are_a_clear_error(tmp_path, corpus):
    with pytest.raises(torch.multiprocessing.ProcessRaisedException):
        train_on_two_processes(ddp_config(corpus), tmp_path / "main", second_model_dir=tmp_path / "elsewhere")
    error = (tmp_path / "elsewhere.rank1.error").read_text(encoding="utf-8")
    assert re.fullmatch(r"process 1 cannot see .*spm.model, which the main process wrote: on several machines, "
                        "--model-dir must be on a file system that all of them share", error), error
