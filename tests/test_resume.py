"""Training faults: kill -9 and resume, damaged checkpoints, a full disk, NaN losses.

The promise tested here: a crash at any moment loses at most one checkpoint interval, a resumed
run reaches exactly the parameters of an uninterrupted one (CPU, same seed and steps), a damaged
file is an error that names it, and a failed save never replaces a good checkpoint.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

import attnmt.store as store
import attnmt.training.state as trainer_state
import attnmt.training.loop as training
from attnmt.errors import CheckpointError
from attnmt.store import TRAINER_STATE_FILE, WEIGHTS_FILE, previous_path
from attnmt.training.state import TrainerState, load_trainer_state, save_trainer_state
from attnmt.config import ModelConfig
from attnmt.data.corpus import CorpusError
from attnmt.model import Seq2Seq
from attnmt.training.loop import TrainingError, train
from attnmt.translator import Translator
from toy import toy_config, write_toy_corpus


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, str]:
    return write_toy_corpus(tmp_path_factory.mktemp("resume") / "data", n_train=200)


def resumable_config(corpus, **overrides):
    """Dropout (torch RNG), a plateau schedule that really cuts the LR, BLEU early-stopping state:
    everything that must survive a restart."""
    settings = dict(max_steps=60, valid_every=20, checkpoint_every=7, schedule="plateau", plateau_patience=0,
                    early_stopping_metric="bleu")
    settings.update(overrides)
    config = toy_config(*corpus, **settings)
    config.model.dropout = 0.3
    return config.validate()


def assert_same_files(a: Path, b: Path) -> None:
    for name in (TRAINER_STATE_FILE, WEIGHTS_FILE):
        first, second = load_file(a / name), load_file(b / name)
        assert first.keys() == second.keys(), name
        different = [key for key in first if not torch.equal(first[key], second[key])]
        assert not different, f"{name}: {different}"


def events(model_dir: Path, *names: str) -> list[dict]:
    lines = (model_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] in names]


class Crash(Exception):
    pass


def crash_on_training_batch(monkeypatch, number: int) -> None:
    """Make the ``number``-th training batch raise, as a crash in the middle of a step."""
    real_loss, calls = training.batch_loss, [0]

    def loss(model, batch, *args):
        if model.training:
            calls[0] += 1
            if calls[0] == number:
                raise Crash()
        return real_loss(model, batch, *args)

    monkeypatch.setattr(training, "batch_loss", loss)


# ---- resume ---------------------------------------------------------------------------------------


def test_a_resumed_run_reaches_exactly_the_parameters_of_an_uninterrupted_one(tmp_path, corpus, monkeypatch):
    train(resumable_config(corpus), tmp_path / "whole", progress=False, log=quiet)

    crash_on_training_batch(monkeypatch, 46)  # after the checkpoint at step 42, mid-way to 49
    with pytest.raises(Crash):
        train(resumable_config(corpus), tmp_path / "crashed", progress=False, log=quiet)
    monkeypatch.undo()
    messages: list[str] = []
    train(resumable_config(corpus), tmp_path / "crashed", resume=True, progress=False, log=messages.append)

    assert any("resuming at step 42" in message for message in messages)
    assert_same_files(tmp_path / "whole", tmp_path / "crashed")  # weights, Adam moments, RNG: bit for bit
    # the LR schedule, validation results and the logged training loss window are the same too
    keys = ("step", "lr", "loss", "bleu")
    whole = [[e.get(k) for k in keys] for e in events(tmp_path / "whole", "train", "valid")]
    resumed = [[e.get(k) for k in keys] for e in events(tmp_path / "crashed", "train", "valid")]
    assert resumed == whole and len({e[1] for e in whole}) > 1  # the plateau schedule did cut the LR
    assert [e["step"] for e in events(tmp_path / "crashed", "resume")] == [42]


def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, corpus):
    """The real thing: ``attnmt train`` in a subprocess, SIGKILL at a (seeded) random moment of a
    random checkpoint interval between steps 20 and 130 of 240, ``attnmt train --resume``, and the result
    compared with a run never interrupted. The moment is found by watching the checkpoints on disk,
    not by a clock, so that a fast machine cannot finish the run before the kill."""
    config = resumable_config(corpus, max_steps=240, valid_every=80, checkpoint_every=10)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config.to_yaml(), encoding="utf-8")
    model_dir = tmp_path / "killed"
    state_file = model_dir / TRAINER_STATE_FILE
    command = [sys.executable, "-m", "attnmt", "train", str(config_file), "--model-dir", str(model_dir),
               "--no-progress"]
    rng = random.Random(20261202)  # seeded: a failure names the same kill point again
    target = rng.randrange(20, 130, 10)  # at least 110 steps left after it
    with open(tmp_path / "first.log", "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120

            def wait_for_checkpoint(step: int) -> None:
                while checkpoint_step(state_file) < step:
                    assert process.poll() is None, f"the run ended before its checkpoint at step {step}"
                    assert time.monotonic() < deadline, f"no checkpoint at step {step} within 120 s"
                    time.sleep(0.002)

            wait_for_checkpoint(10)
            tenth_step_seen = time.monotonic()
            wait_for_checkpoint(20)
            interval = time.monotonic() - tenth_step_seen  # the time of one checkpoint interval, 10 steps
            wait_for_checkpoint(target)
            time.sleep(rng.uniform(0.0, interval))  # anywhere in the next interval, often in the middle of a write
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    killed_at = load_file(state_file)  # the latest checkpoint loads whatever the moment
    assert killed_at, "empty trainer state"
    assert target <= checkpoint_step(state_file) < 240

    resumed = subprocess.run([*command, "--resume"], capture_output=True, timeout=300)
    log = resumed.stderr.decode()
    assert resumed.returncode == 0, log
    resumed_at = int(re.search(r"resuming at step (\d+)", log).group(1))
    assert target <= resumed_at < 240 and "240 steps" in log, (target, log)
    assert not list(model_dir.glob(".*.tmp"))  # what the kill left behind was cleaned up

    train(config, tmp_path / "whole", progress=False, log=quiet)
    assert_same_files(tmp_path / "whole", model_dir)


def checkpoint_step(path: Path) -> int:
    """The step of the trainer state at ``path`` (0 while there is none), from the metadata in its
    safetensors header. One open() reads it: checkpoints are replaced by renaming, so an open file is
    one whole checkpoint. (safe_open(path, "pt") maps the path a second time through torch, and while
    a run writes checkpoints the two can be different files of different sizes.)"""
    try:
        with open(path, "rb") as state:
            header = json.loads(state.read(int.from_bytes(state.read(8), "little")))
    except FileNotFoundError:
        return 0
    return json.loads(header["__metadata__"][trainer_state._STATE_KEY])["trainer"]["step"]


def test_a_kill_at_any_moment_never_leaves_a_broken_checkpoint(tmp_path):
    """A child process saves checkpoints in a loop and is killed with SIGKILL at random moments, often
    in the middle of a write; the latest checkpoint (and the previous one) must always load."""
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=64, encoder_hidden_size=64, hidden_size=128), 500, 500)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3, dtype=torch.long), torch.tensor([3]), torch.ones(1, 2, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    path = tmp_path / TRAINER_STATE_FILE
    # A latest and a previous checkpoint, as after the second save of any run: on a busy machine the
    # first child may be killed before its first save, and the previous checkpoint must exist then too.
    for _ in range(2):
        save_trainer_state(path, model, optimizer, None, TrainerState(step=0))
    rng, last_step, interrupted_writes = random.Random(4), 0, 0
    for _ in range(15):
        child = os.fork()
        if child == 0:  # pragma: no cover - the child never returns
            try:
                for step in range(last_step + 1, 10**9):
                    save_trainer_state(path, model, optimizer, None, TrainerState(step=step))
            finally:
                os._exit(0)
        # Wait for the child's first save, whatever the machine's speed, then kill it a seeded random
        # moment later: usually in the middle of a later write.
        deadline = time.monotonic() + 60
        while checkpoint_step(path) <= last_step and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        state = load_trainer_state(path, model, optimizer, None)
        previous = load_trainer_state(previous_path(path), model, optimizer, None)
        assert state.step > last_step and previous.step in (state.step - 1, state.step)
        last_step = state.step
        interrupted_writes += len(store.remove_stale_temporaries(tmp_path)) > 0
    assert last_step > 0
    print(f"{interrupted_writes} of 15 kills interrupted a write")  # pytest -s shows it


# ---- damaged checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, corpus) -> Path:
    """A short run with checkpoints at steps 5, 10, ..., 20: the last and the previous are on disk."""
    model_dir = tmp_path_factory.mktemp("damaged") / "model"
    train(toy_config(*corpus, max_steps=20, valid_every=10, checkpoint_every=5), model_dir, progress=False, log=quiet)
    return model_dir


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) * 2 // 3 :]
    else:  # a few flipped bits in the tensor data: the file still parses, only the checksum sees it
        for offset in (len(data) - 100, len(data) - 1000):
            data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "bits flipped"])
def test_a_damaged_checkpoint_is_a_clear_error_naming_it_and_the_previous_one_is_kept(
    tmp_path, trained_dir, corpus, how
):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    latest = model_dir / TRAINER_STATE_FILE
    damage(latest, how)
    config = toy_config(*corpus, max_steps=30, valid_every=10, checkpoint_every=5)
    with pytest.raises(CheckpointError) as error:
        train(config, model_dir, resume=True, progress=False, log=quiet)
    message = str(error.value)
    assert str(latest) in message and ("truncated" in message or "corrupted" in message)
    assert f"previous checkpoint {previous_path(latest)} is kept" in message

    shutil.move(previous_path(latest), latest)  # what the message says to do
    messages: list[str] = []
    train(config, model_dir, resume=True, progress=False, log=messages.append)
    assert any("resuming at step 15" in m for m in messages)


@pytest.mark.parametrize("how", ["truncated", "bits flipped"])
def test_damaged_weights_are_a_clear_error_when_loading_a_model(tmp_path, trained_dir, how):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    damage(model_dir / WEIGHTS_FILE, how)
    with pytest.raises(CheckpointError, match=str(model_dir / WEIGHTS_FILE)):
        Translator.load(model_dir)


def test_stale_temporaries_are_removed_and_a_torn_metrics_line_is_cut(tmp_path, trained_dir, corpus):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    (model_dir / f".{TRAINER_STATE_FILE}.abc123.tmp").write_bytes(b"half a checkpoi")
    with open(model_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:
        metrics.write('{"event": "train", "st')  # killed in the middle of a line
    train(toy_config(*corpus, max_steps=25, valid_every=10, checkpoint_every=5), model_dir, resume=True,
          progress=False, log=quiet)
    assert not list(model_dir.glob(".*.tmp"))
    lines = (model_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in lines][-1] == "stop"


def test_resuming_with_another_model_config_is_a_clear_error(tmp_path, trained_dir, corpus):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    config = toy_config(*corpus, max_steps=30)
    config.model.hidden_size = 48
    with pytest.raises(TrainingError, match="model.hidden_size differ"):
        train(config, model_dir, resume=True, progress=False, log=quiet)


def test_resuming_a_finished_run_trains_no_further(tmp_path, trained_dir, corpus):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    before = load_file(model_dir / TRAINER_STATE_FILE)
    result = train(toy_config(*corpus, max_steps=20, valid_every=10, checkpoint_every=5), model_dir, resume=True,
                   progress=False, log=quiet)
    assert result.steps == 20 and "max_steps=20" in result.stop_reason
    after = load_file(model_dir / TRAINER_STATE_FILE)
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_overwrite_discards_the_old_runs_files(tmp_path, trained_dir, corpus):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    config = toy_config(*corpus, max_steps=4, valid_every=10)
    config.model.hidden_size = 48
    train(config, model_dir, overwrite=True, progress=False, log=quiet)
    assert len(events(model_dir, "stop")) == 1  # the old run's metrics are gone
    assert not previous_path(model_dir / TRAINER_STATE_FILE).exists()  # so is its previous checkpoint
    assert Translator.load(model_dir).config.model.hidden_size == 48  # config and weights of the new run


def test_overwrite_with_bad_data_fails_before_the_old_model_is_touched(tmp_path, trained_dir):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    before = {path: path.read_bytes() for path in model_dir.rglob("*") if path.is_file()}
    sentences = ["one two three", "four five", "ten nine eight seven"]
    translations = [t.text for t in Translator.load(model_dir).translate(sentences, beam=2)]
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=30)
    (tmp_path / "data" / "train.de").write_text("eins\nzwei\n", encoding="utf-8")  # 2 lines against 30

    with pytest.raises(CorpusError) as error:
        train(toy_config(train_prefix, valid_prefix, max_steps=4), model_dir, overwrite=True, progress=False,
              log=quiet)
    message = str(error.value)
    assert f"{train_prefix}.en has 30 lines" in message and f"{train_prefix}.de has 2 lines" in message
    with pytest.raises(CorpusError, match="nowhere"):  # a typo in a path
        train(toy_config(str(tmp_path / "nowhere"), valid_prefix, max_steps=4), model_dir, overwrite=True,
              progress=False, log=quiet)

    assert {path: path.read_bytes() for path in model_dir.rglob("*") if path.is_file()} == before
    assert [t.text for t in Translator.load(model_dir).translate(sentences, beam=2)] == translations


# ---- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_simulated_by_ENOSPC_stops_training_with_a_clear_error_and_keeps_the_checkpoint(
    tmp_path, corpus, monkeypatch
):
    """``save_file`` writes part of the file, then fails as a full disk does (OSError ENOSPC)."""
    real_save, calls = safetensors.torch.save_file, [0]

    def save_until_the_disk_is_full(tensors, filename, metadata=None):
        calls[0] += 1
        if calls[0] <= 3:  # the trainer state at step 5, the weights and the trainer state at step 10
            return real_save(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", save_until_the_disk_is_full)
    model_dir = tmp_path / "model"
    with pytest.raises(CheckpointError) as error:
        train(toy_config(*corpus, max_steps=40, valid_every=10, checkpoint_every=5), model_dir, progress=False,
              log=quiet)
    monkeypatch.undo()
    assert f"cannot write {model_dir / TRAINER_STATE_FILE}: no space left on the device" in str(error.value)
    assert "is unchanged" in str(error.value)
    assert not list(model_dir.glob(".*.tmp"))
    state = load_trainer_state(model_dir / TRAINER_STATE_FILE, *_model_and_optimizer(model_dir))
    assert state.step == 10


def _model_and_optimizer(model_dir: Path):
    translator = Translator.load(model_dir)
    optimizer = training.build_optimizer(translator.model, translator.config.train)
    return translator.model, optimizer, None


def _mount_tmpfs(directory: Path, size: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
    return subprocess.run(command, capture_output=True).returncode == 0


def test_a_real_full_filesystem_on_save_is_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    """A tmpfs just big enough for one checkpoint (needs root; skipped otherwise)."""
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=32, encoder_hidden_size=32, hidden_size=64), 300, 300)
    optimizer = torch.optim.Adam(model.parameters())
    save_trainer_state(tmp_path / "probe.safetensors", model, optimizer, None, TrainerState())
    size = (tmp_path / "probe.safetensors").stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, math.ceil(size * 1.5 / 4096) * 4096):
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC test above simulates a full disk instead")
    try:
        path = disk / TRAINER_STATE_FILE
        save_trainer_state(path, model, optimizer, None, TrainerState(step=1))
        with pytest.raises(CheckpointError, match=f"cannot write {path}: no space left on the device"):
            save_trainer_state(path, model, optimizer, None, TrainerState(step=2))
        assert load_trainer_state(path, model, optimizer, None).step == 1
        assert sorted(p.name for p in disk.iterdir()) == sorted([path.name, previous_path(path).name])
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


# ---- NaN and inf ----------------------------------------------------------------------------------


class InfiniteGradient(torch.autograd.Function):
    """The identity forward; an infinite gradient backward (a finite loss whose step still blows up)."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, gradient):
        return gradient * math.inf


def poison_training_losses(monkeypatch, poison: dict[int, str] | None = None, from_batch: int | None = None) -> None:
    """Training batch k gets a NaN loss, an inf loss or an infinite gradient, as ``poison[k]`` says;
    with ``from_batch``, every batch from then on gets a NaN loss."""
    real_loss, calls = training.batch_loss, [0]

    def loss(model, batch, *args):
        value = real_loss(model, batch, *args)
        if not model.training:
            return value
        calls[0] += 1
        kind = "nan" if from_batch is not None and calls[0] >= from_batch else (poison or {}).get(calls[0])
        if kind == "nan":
            return value * math.nan
        if kind == "inf":
            return value * math.inf
        if kind == "inf gradient":
            return InfiniteGradient.apply(value)
        return value

    monkeypatch.setattr(training, "batch_loss", loss)


def test_non_finite_losses_and_gradients_skip_the_step_and_are_logged(tmp_path, corpus, monkeypatch):
    poison_training_losses(monkeypatch, {3: "nan", 4: "inf", 9: "inf gradient"})
    messages: list[str] = []
    result = train(toy_config(*corpus, max_steps=20, valid_every=10, clip_grad_norm=0.0), tmp_path / "model",
                   progress=False, log=messages.append)
    assert result.steps == 20 and "max_steps" in result.stop_reason
    skipped = events(tmp_path / "model", "nonfinite")
    assert [(e["step"], e["problem"]) for e in skipped] == [
        (2, "loss is nan"), (2, "loss is inf"), (6, skipped[2]["problem"])
    ]
    assert skipped[2]["problem"] in ("gradient norm is inf", "gradient norm is nan")
    assert [e["in_a_row"] for e in skipped] == [1, 2, 1]
    assert any("step 2: loss is inf; step skipped (2 in a row)" in m for m in messages)
    weights = load_file(tmp_path / "model" / TRAINER_STATE_FILE)
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_nan_again_and_again_stops_training_with_a_message_keeping_the_last_good_checkpoint(
    tmp_path, corpus, monkeypatch
):
    poison_training_losses(monkeypatch, from_batch=18)  # after the checkpoint at step 15
    model_dir = tmp_path / "model"
    with pytest.raises(TrainingError) as error:
        train(toy_config(*corpus, max_steps=100, valid_every=10, checkpoint_every=5), model_dir, progress=False,
              log=quiet)
    message = str(error.value)
    assert f"diverged: {training.MAX_NONFINITE_IN_A_ROW} non-finite losses or gradients in a row at step 17" in message
    assert f"{model_dir / TRAINER_STATE_FILE} (step 15)" in message and "learning_rate" in message
    monkeypatch.undo()
    assert load_trainer_state(model_dir / TRAINER_STATE_FILE, *_model_and_optimizer(model_dir)).step == 15
    assert events(model_dir, "stop")[-1]["reason"].startswith(f"{training.MAX_NONFINITE_IN_A_ROW} non-finite")
    Translator.load(model_dir).translate(["one two"])  # the best weights are intact
