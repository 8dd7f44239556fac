"""The training loop: batches → loss → step, validation, checkpoints, early stopping.

Read ``_train`` top to bottom, as nanoGPT's train.py: the data and the model directory are prepared,
the model and its optimizer built (or restored, for ``--resume``), and the loop runs until the step,
time or epoch budget is spent or validation stops improving. What one optimizer step does is
``Trainee.step``; logging, validation and checkpoints hang off the loop as small functions.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from attnmt.config import Config, TrainConfig
from attnmt.data.batching import Batch, collate, token_batches
from attnmt.data.vocab import PAD_ID
from attnmt.decoding import decode_ids, with_search
from attnmt.errors import TrainingError
from attnmt.evaluate import exact_match, score_corpus
from attnmt.model import Seq2Seq
from attnmt.runtime import MixedPrecision, tensors_on
from attnmt.store import (
    CHECKPOINTS_DIR,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    average_weights,
    build_model,
    keep_checkpoint,
    kept_checkpoints,
    load_state,
    load_weights,
    save_weights,
)
from attnmt.training.distributed import Worker, start_worker, step_groups, stop_worker
from attnmt.training.metrics import MetricsLog
from attnmt.training.prepare import PreparedData, prepare_run
from attnmt.training.progress import TrainingProgress, bar_wanted
from attnmt.training.state import TrainerState, load_trainer_state, rng_state, save_trainer_state

MAX_NONFINITE_IN_A_ROW = 20  # skipped steps (non-finite loss or gradient) in a row before training gives up

Log = Callable[[str], None]


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    elapsed_seconds: float
    best_metric: float | None
    stop_reason: str
    validations: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # of the process that returns it (0 unless torchrun started several)


def train(config: Config, model_dir: Path | str, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, log: Log = print, init_from: Path | str | None = None) -> TrainResult:
    """Train a model as ``config`` says and write it to ``model_dir``.

    resume: continue from ``model_dir``'s trainer state; overwrite: start afresh in a non-empty dir.
    progress: show a progress bar (None: only when stderr is a terminal).
    init_from: fine-tune: start from the weights and tokenizers of this model directory, with a fresh
    optimizer and schedule (``config``'s model and vocab sections must be that model's:
    ``prepare.finetune_config``).
    Started by torchrun, every process calls this: they train one model together with
    DistributedDataParallel, and only the main process writes files and logs (attnmt.training.distributed).
    """
    worker = start_worker(config.train.device)
    finished = False
    try:
        with contextlib.ExitStack() as resources:  # closes the metrics log and the progress bar, whatever happens
            result = _train(worker, config, Path(model_dir), resume, overwrite, progress,
                            log if worker.is_main else _silent, None if init_from is None else Path(init_from), resources)
        finished = True
        return result
    finally:
        stop_worker(worker, finished)


def _train(worker: Worker, config: Config, model_dir: Path, resume: bool, overwrite: bool, progress: bool | None,
           log: Log, init_from: Path | None, resources: contextlib.ExitStack) -> TrainResult:
    """The run, read top to bottom: one function on purpose (nanoGPT's train.py), so that the order
    of what happens in a step, a validation and a checkpoint is in one place."""
    cfg = config.train
    amp = MixedPrecision.create(cfg.precision, worker.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed + worker.rank)  # dropout differs between processes; DDP copies rank 0's weights
    # The data, checked before anything in model_dir changes; the tokenizers; the config on disk.
    data = prepare_run(worker, config, model_dir, resume, overwrite, log, progress=progress if worker.is_main else False,
                       init_from=init_from)
    trainee = Trainee.create(config, data, worker, amp)
    if resume:
        state = trainee.restore(model_dir, log)
    else:
        state = TrainerState()
        if init_from is not None:  # every process loads them
            load_weights(trainee.model, init_from / WEIGHTS_FILE)
            log(f"fine-tuning: starting from the weights of {init_from / WEIGHTS_FILE}")
    batches_per_step = worker.world_size * cfg.accumulate
    log(f"model: {trainee.model.num_parameters():,} parameters; {data.n_train_pairs} training pairs")
    log(f"training {worker.where()} in {cfg.precision}; each step: {batches_per_step} batch(es) of at most "
        f"{cfg.batch_tokens} tokens")

    metrics = resources.enter_context(contextlib.closing(MetricsLog(model_dir, enabled=worker.is_main)))
    if resume:
        metrics.write("resume", step=state.step, epoch=state.epoch + 1, batch_in_epoch=state.batch_in_epoch)
    clock = Clock(state.elapsed_seconds)
    bar = resources.enter_context(contextlib.closing(TrainingProgress(
        _planned_steps(cfg, data, batches_per_step), cfg.max_time, state.step, state.elapsed_seconds,
        show=bar_wanted(progress) and worker.is_main)))
    window = ThroughputWindow.resume(state)
    checkpoint_every = cfg.checkpoint_every or cfg.valid_every
    checkpoint_step = state.step if resume else None  # the step of the trainer state on disk
    validations: list[dict[str, Any]] = []
    # a resumed run may have nothing left to do
    stop_reason = _budget_spent(cfg, state, state.elapsed_seconds) or _early_stop(cfg, state)
    diverged = False

    while not stop_reason:
        if state.epoch >= cfg.max_epochs:
            stop_reason = f"reached train.max_epochs={cfg.max_epochs}"
            break
        batches = token_batches(data.train_src_lengths, data.train_trg_lengths, cfg.batch_tokens,
                                shuffle=True, seed=cfg.seed, epoch=state.epoch)
        _check_enough_batches(len(batches), batches_per_step, cfg)
        for group in step_groups(batches, state.batch_in_epoch, batches_per_step):
            loss, step_tokens, elapsed, problem = trainee.step(group, data, clock)
            state.batch_in_epoch += len(group)
            if problem:  # the step was skipped: the weights stay as they were
                if _skip_nonfinite_step(problem, state, metrics, log) >= MAX_NONFINITE_IN_A_ROW:
                    stop_reason, diverged = f"{MAX_NONFINITE_IN_A_ROW} non-finite losses or gradients in a row", True
                    break
                continue
            state.nonfinite_steps = 0
            state.step += 1
            bar.advance(state.step, elapsed)
            window.add(step_tokens, loss)
            if state.step % cfg.log_every == 0:
                _log_training(metrics, bar, window, state, trainee, clock)

            stop_reason = _budget_spent(cfg, state, elapsed)
            validation_due = state.step % cfg.valid_every == 0 or bool(stop_reason)
            if validation_due or state.step % checkpoint_every == 0:
                state.elapsed_seconds = clock.elapsed()
                window.store(state)
                if validation_due:
                    validations.append(_validate_and_checkpoint(trainee, state, data, config, model_dir, metrics, log))
                    stop_reason = stop_reason or _early_stop(cfg, state)
                    window.restart()  # validation time is not training throughput
                else:
                    trainee.save_checkpoint(model_dir, state)
                checkpoint_step = state.step
            if stop_reason:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0

    bar.close()
    if diverged:  # nothing more is saved: the checkpoint on disk is the last good one
        metrics.write("stop", step=state.step, reason=stop_reason, elapsed=clock.elapsed())
        raise TrainingError(_diverged_message(model_dir, state, checkpoint_step))
    if state.best_metric is None:  # stopped before any validation: keep what we have
        state.elapsed_seconds = clock.elapsed()
        validations.append(_validate_and_checkpoint(trainee, state, data, config, model_dir, metrics, log))
    log(f"training stopped: {stop_reason}")
    if cfg.average_last:
        _average_last(trainee, state, data, config, model_dir, metrics, log)
    metrics.write("stop", step=state.step, reason=stop_reason, elapsed=clock.elapsed())
    return TrainResult(model_dir, state.step, clock.elapsed(), state.best_metric, stop_reason, validations,
                       worker.rank)


# ----------------------------------------------------------------------------- one optimizer step


def batch_loss(model: nn.Module, batch: Batch, label_smoothing: float, guided_weight: float = 0.0) -> torch.Tensor:
    """Summed token cross-entropy of a batch (padding ignored), plus, with guided alignment targets
    (``batch.alignment``) and ``guided_weight`` > 0, that weight times the cross-entropy between each
    aligned target piece's reference distribution over source pieces and its attention (summed over
    the aligned pieces, as Marian and OpenNMT-py's guided alignment)."""
    real = batch.trg_output != PAD_ID  # (batch, trg_len)
    logits, attention = model(batch.src, batch.src_lengths, batch.trg_input, trg_mask=real)  # (n_trg_tokens, vocab)
    loss = F.cross_entropy(
        logits.float(),  # fp32 under autocast too
        batch.trg_output[real],  # (n_trg_tokens,)
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    if guided_weight and batch.alignment is not None:
        # attention, reference: (batch, trg_len, src_len); rows without links are zero in the reference
        loss = loss - guided_weight * (batch.alignment * attention.float().clamp(min=1e-9).log()).sum()
    return loss


def accumulate_gradients(model: nn.Module, batches: list[Batch], step_tokens: int, world_size: int,
                         amp: MixedPrecision, label_smoothing: float, guided_weight: float = 0.0) -> torch.Tensor:
    """Forward and backward through this process's batches of one optimizer step, adding up their
    gradients; returns the sum of their losses (detached).

    Each batch's summed token loss is divided by ``step_tokens``, the target tokens of the whole step
    on all processes, and multiplied by ``world_size``, since DDP averages the gradients of the
    processes: the result is the gradient of the step's mean token loss, however the step's batches
    are spread over processes and accumulation. Under DDP only the last backward communicates.
    """
    total = torch.zeros((), device=amp.device)
    for number, batch in enumerate(batches):
        batch = batch.to(amp.device)
        accumulating = isinstance(model, DistributedDataParallel) and number < len(batches) - 1
        with model.no_sync() if accumulating else contextlib.nullcontext():
            with amp.autocast():
                loss = batch_loss(model, batch, label_smoothing, guided_weight)
            amp.scaler.scale(loss * world_size / step_tokens).backward()
        total += loss.detach()
    return total


@dataclass
class Trainee:
    """What training changes and a checkpoint saves: the model (and the module training steps call:
    DDP around it, or the model itself), its optimizer, schedule and loss scaler."""

    model: Seq2Seq
    parallel_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: MixedPrecision
    worker: Worker
    train_config: TrainConfig

    @classmethod
    def create(cls, config: Config, data: PreparedData, worker: Worker, amp: MixedPrecision) -> "Trainee":
        model = build_model(config, data.src_tokenizer, data.trg_tokenizer).to(worker.device)
        optimizer = build_optimizer(model, config.train)
        return cls(model, worker.wrap(model), optimizer, build_scheduler(optimizer, config.train), amp, worker,
                   config.train)

    def step(self, group: list[np.ndarray], data: PreparedData, clock: Clock) -> tuple[float, int, float, str]:
        """One optimizer step on a group of batches (this process trains on its share). Returns the
        step's loss summed over all processes, its target tokens, the seconds of training so far
        (the processes' mean), and what was wrong if the step was skipped (a non-finite loss or
        gradient norm; then the weights stay as they were), else "". Loss and seconds are the same
        on every process, so that all of them take the same decisions (skip, log, stop)."""
        cfg = self.train_config
        self.parallel_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        guided = cfg.guided_alignment_weight if data.train.has_links else 0.0
        shard = [collate(data.train.ids("src", indices), data.train.ids("trg", indices), indices,
                         [data.train.links(i) for i in indices] if guided else None)
                 for indices in self.worker.shard(group)]
        step_tokens = sum(int(data.train_trg_lengths[indices].sum()) + len(indices) for indices in group)  # +EOS
        local_loss = accumulate_gradients(self.parallel_model, shard, step_tokens, self.worker.world_size, self.amp,
                                          cfg.label_smoothing, guided)
        loss, elapsed = self.worker.agree(local_loss, clock.elapsed())
        problem = f"loss is {loss}" if not math.isfinite(loss) else ""
        if not problem:
            self.amp.scaler.unscale_(self.optimizer)  # fp16: the true gradients, to clip and measure
            # max_norm=inf only measures (the gradients are multiplied by exactly 1)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm or math.inf)
            if not torch.isfinite(grad_norm):
                problem = f"gradient norm is {float(grad_norm)}"
                if self.amp.scaler.is_enabled():  # fp16: an overflow; the loss scale goes down
                    self.amp.scaler.update()
                    problem += f" (fp16 loss scale lowered to {self.amp.scaler.get_scale():g})"
        if problem:
            self.optimizer.zero_grad(set_to_none=True)
            return loss, step_tokens, elapsed, problem
        self.amp.scaler.step(self.optimizer)  # with fp32 and bf16: optimizer.step()
        self.amp.scaler.update()
        if cfg.schedule == "warmup_decay":
            self.scheduler.step()
        return loss, step_tokens, elapsed, ""

    def save_checkpoint(self, model_dir: Path, state: TrainerState) -> None:
        """The trainer state, with the random state of every process; the main process writes it."""
        rng_states = self.worker.gather(rng_state())
        state.world_size = self.worker.world_size
        if self.worker.is_main:
            save_trainer_state(model_dir / TRAINER_STATE_FILE, self.model, self.optimizer, self.scheduler, state,
                               self.amp.scaler, rng_states)

    def restore(self, model_dir: Path, log: Log) -> TrainerState:
        """Where the run in ``model_dir`` left off: weights, optimizer, schedule, RNG and position."""
        state = load_trainer_state(model_dir / TRAINER_STATE_FILE, self.model, self.optimizer, self.scheduler,
                                   self.amp.scaler, self.worker.rank)
        log(f"resuming at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
        if state.world_size != self.worker.world_size:
            log(f"the checkpoint was written by {state.world_size} process(es), this run has "
                f"{self.worker.world_size}: the data position carries over; a process the checkpoint has no random "
                "state for keeps its seed")
        return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    # fused: one kernel over all parameters instead of a few per tensor (on the CPU as well)
    return torch.optim.Adam(model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> Any:
    """plateau: cut the LR when validation stops improving; warmup_decay: linear warmup then
    inverse-square-root decay, per step; constant: none."""
    if train.schedule == "plateau":
        mode = "max" if train.early_stopping_metric == "bleu" else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=train.plateau_factor, patience=train.plateau_patience,
            min_lr=train.min_learning_rate,
        )
    if train.schedule == "warmup_decay":
        warmup = max(train.warmup_steps, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        )
    return None


# ----------------------------------------------------------------------------- time and throughput


class Clock:
    """Seconds of training, those of the run a resumed run continues included."""

    def __init__(self, already: float = 0.0) -> None:
        self.started = time.perf_counter() - already

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class ThroughputWindow:
    """The target tokens and summed loss since the last "train" log line, and its start: a
    checkpoint keeps them, so that a resumed run logs the same numbers."""

    tokens: int
    loss: float
    started: float  # time.perf_counter() at the window's start

    @classmethod
    def resume(cls, state: TrainerState) -> "ThroughputWindow":
        return cls(state.window_tokens, state.window_loss, time.perf_counter() - state.window_seconds)

    def add(self, tokens: int, loss: float) -> None:
        self.tokens += tokens
        self.loss += loss

    def restart(self) -> None:
        self.tokens, self.loss, self.started = 0, 0.0, time.perf_counter()

    def store(self, state: TrainerState) -> None:
        state.window_tokens, state.window_loss = self.tokens, self.loss
        state.window_seconds = time.perf_counter() - self.started


def _log_training(metrics: MetricsLog, bar: TrainingProgress, window: ThroughputWindow, state: TrainerState,
                  trainee: Trainee, clock: Clock) -> None:
    entry = metrics.write(
        "train", step=state.step, epoch=state.epoch + 1, loss=window.loss / window.tokens,
        lr=trainee.optimizer.param_groups[0]["lr"], tokens_per_second=window.tokens / (time.perf_counter() - window.started),
        elapsed=clock.elapsed(),
    )
    bar.show_loss(entry["loss"], entry["tokens_per_second"])
    window.restart()


def _silent(message: str) -> None:
    """The log of the processes other than the main one."""


# ----------------------------------------------------------------------------- budgets and stopping


def _check_enough_batches(n_batches: int, batches_per_step: int, train_cfg: TrainConfig) -> None:
    if n_batches < batches_per_step:  # else every epoch would end before its first step
        raise TrainingError(f"the training data makes {n_batches} batch(es) of train.batch_tokens="
                            f"{train_cfg.batch_tokens} tokens, fewer than the {batches_per_step} that one step takes "
                            "(processes x train.accumulate): lower train.batch_tokens or train.accumulate")


def _planned_steps(train_cfg: TrainConfig, data: PreparedData, batches_per_step: int) -> int | None:
    """The step budget; None for a run bounded only by time (its progress bar counts seconds)."""
    if train_cfg.max_steps:
        return train_cfg.max_steps
    if train_cfg.max_time:
        return None
    n_batches = len(token_batches(data.train_src_lengths, data.train_trg_lengths, train_cfg.batch_tokens,
                                  shuffle=False, seed=train_cfg.seed, epoch=0))
    return n_batches // batches_per_step * train_cfg.max_epochs


def _budget_spent(train_cfg: TrainConfig, state: TrainerState, elapsed: float) -> str:
    if train_cfg.max_steps and state.step >= train_cfg.max_steps:
        return f"reached train.max_steps={train_cfg.max_steps}"
    if train_cfg.max_time and elapsed >= train_cfg.max_time:
        return f"reached train.max_time={train_cfg.max_time:.0f}s"
    return ""


def _early_stop(train_cfg: TrainConfig, state: TrainerState) -> str:
    patience = train_cfg.early_stopping_patience
    if patience and state.validations_without_improvement >= patience:
        return f"no improvement of {train_cfg.early_stopping_metric} in {patience} validations (best at step {state.best_step})"
    return ""


def _skip_nonfinite_step(problem: str, state: TrainerState, metrics: MetricsLog, log: Log) -> int:
    """Log a skipped step; returns how many steps in a row have been skipped."""
    state.nonfinite_steps += 1
    metrics.write("nonfinite", step=state.step, problem=problem, in_a_row=state.nonfinite_steps)
    log(f"step {state.step}: {problem}; step skipped ({state.nonfinite_steps} in a row)")
    return state.nonfinite_steps


def _diverged_message(model_dir: Path, state: TrainerState, checkpoint_step: int | None) -> str:
    if checkpoint_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = (f"the last good checkpoint, {model_dir / TRAINER_STATE_FILE} (step {checkpoint_step}), and the best "
                f"weights, {model_dir / WEIGHTS_FILE} (step {state.best_step}), are kept")
    return (f"training diverged: {MAX_NONFINITE_IN_A_ROW} non-finite losses or gradients in a row at step "
            f"{state.step}; {kept}. Lower train.learning_rate or train.clip_grad_norm and train again")


# ----------------------------------------------------------------------------- validation


@torch.inference_mode()
def validate(model: Seq2Seq, data: PreparedData, config: Config) -> dict[str, Any]:
    """Validation loss and perplexity (teacher forcing) and greedy BLEU against the raw references,
    in fp32 on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for indices in token_batches(data.valid_src_lengths, data.valid_trg_lengths, config.train.batch_tokens,
                                 shuffle=False, seed=0, epoch=0):
        batch = collate([data.valid_src[i] for i in indices], [data.valid_trg[i] for i in indices], indices)
        total_loss += float(batch_loss(model, batch.to(device), 0.0))
        total_tokens += batch.n_trg_tokens
    loss = total_loss / max(total_tokens, 1)
    limit = config.train.valid_max_sentences or len(data.valid_src)
    greedy = with_search(config.decode, beam_size=1, n_best=1, sampling=False)
    hypotheses = decode_ids(model, data.valid_src[:limit], greedy, tensors_on(device))
    outputs = [data.trg_tokenizer.decode(h[0].tokens) for h in hypotheses]
    references = data.valid_references[:limit]
    bleu = score_corpus(outputs, references, metrics=("bleu",))[0]
    return {"loss": loss, "perplexity": math.exp(min(loss, 100.0)), "bleu": bleu.value,
            "exact_match": exact_match(outputs, references), "bleu_signature": bleu.signature,
            "example": {"hypothesis": outputs[0], "reference": references[0]}}


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether a validation ``value`` of ``metric`` beats ``best`` (higher BLEU, lower loss; None: no best yet)."""
    return best is None or (value > best if metric == "bleu" else value < best)


def _average_last(trainee: Trainee, state: TrainerState, data: PreparedData, config: Config, model_dir: Path,
                  metrics: MetricsLog, log: Log) -> None:
    """``train.average_last``: the mean of the last kept checkpoints, validated; it becomes the
    model (``model.safetensors``) if it scores better than the best single checkpoint."""
    if not trainee.worker.is_main:
        return
    paths = kept_checkpoints(model_dir)[-config.train.average_last :]
    averaged = copy.deepcopy(trainee.model)
    load_state(averaged, average_weights(paths), model_dir / CHECKPOINTS_DIR)
    result = validate(averaged, data, config)
    metric_name = config.train.early_stopping_metric
    value = result[metric_name]
    better = improves(metric_name, value, state.best_metric)
    if better:
        save_weights(averaged, model_dir / WEIGHTS_FILE)
    metrics.write("average", step=state.step, checkpoints=[path.name for path in paths], best=better,
                  **{k: v for k, v in result.items() if k != "example"})
    log(f"the average of the last {len(paths)} checkpoints: valid {metric_name} {value:.2f} against "
        f"{state.best_metric:.2f} for the best single one; {'kept as the model' if better else 'not kept'}")


def _validate_and_checkpoint(trainee: Trainee, state: TrainerState, data: PreparedData, config: Config,
                             model_dir: Path, metrics: MetricsLog, log: Log) -> dict[str, Any]:
    """Validate, keep the best weights, write the trainer state (the 'last' checkpoint). The main
    process validates; the others receive its results and update their state just as it does."""
    worker = trainee.worker
    result = worker.broadcast(validate(trainee.model, data, config) if worker.is_main else None)
    metric_name = config.train.early_stopping_metric
    value = result[metric_name]
    better = improves(metric_name, value, state.best_metric)
    if better:
        state.best_metric, state.best_step = value, state.step
        state.validations_without_improvement = 0
        if worker.is_main:
            save_weights(trainee.model, model_dir / WEIGHTS_FILE)
    else:
        state.validations_without_improvement += 1
    if config.train.keep_checkpoints and worker.is_main:
        keep_checkpoint(trainee.model, model_dir, state.step, config.train.keep_checkpoints)
    if config.train.schedule == "plateau":
        trainee.scheduler.step(value)
    trainee.save_checkpoint(model_dir, state)
    entry = metrics.write("valid", step=state.step, elapsed=state.elapsed_seconds, best=better,
                          lr=trainee.optimizer.param_groups[0]["lr"],
                          **{k: v for k, v in result.items() if k != "example"})
    log(f"step {state.step}: valid loss {result['loss']:.3f}, ppl {result['perplexity']:.2f}, "
        f"BLEU {result['bleu']:.2f}, exact {100 * result['exact_match']:.1f}%{' (best)' if better else ''}; "
        f"e.g. {result['example']['hypothesis']!r}")
    return entry
