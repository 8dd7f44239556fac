"""The training loop: batches → loss → step, validation, checkpoints, early stopping.

Read ``train`` top to bottom: data and tokenizers are prepared, the model and optimizer built, and
the loop runs until the step, time or epoch budget is spent or validation stops improving. Logging
and checkpointing hang off it as small functions.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from attnmt.checkpoint import (
    CONFIG_FILE,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    TrainerState,
    atomic_write_text,
    load_config_file,
    load_trainer_state,
    remove_run_files,
    remove_stale_temporaries,
    rng_state,
    save_trainer_state,
    save_weights,
    tokenizer_files,
)
from attnmt.config import Config, TrainConfig
from attnmt.data.batching import Batch, collate, token_batches
from attnmt.data.vocab import PAD_ID
from attnmt.device import MixedPrecision
from attnmt.distributed import Worker, start_worker, step_groups, stop_worker
from attnmt.evaluate import score_corpus
from attnmt.metrics_log import MetricsLog
from attnmt.model import Seq2Seq
from attnmt.prepare import Corpora, PreparedData, prepare_data, read_corpora
from attnmt.progress import TrainingProgress, bar_wanted
from attnmt.translator import decode_ids

MAX_NONFINITE_IN_A_ROW = 20  # skipped steps (non-finite loss or gradient) in a row before training gives up


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    elapsed_seconds: float
    best_metric: float | None
    stop_reason: str
    validations: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # of the process that returns it (0 unless torchrun started several)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: Seq2Seq, train: TrainConfig) -> torch.optim.Optimizer:
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


def batch_loss(model: Seq2Seq, batch: Batch, label_smoothing: float) -> torch.Tensor:
    """Summed token cross-entropy of a batch (padding ignored)."""
    real = batch.trg_output != PAD_ID  # (batch, trg_len)
    logits, _ = model(batch.src, batch.src_lengths, batch.trg_input, trg_mask=real)  # (n_trg_tokens, vocab)
    return F.cross_entropy(
        logits.float(),  # fp32 under autocast too
        batch.trg_output[real],  # (n_trg_tokens,)
        label_smoothing=label_smoothing,
        reduction="sum",
    )


def train(config: Config, model_dir: Path | str, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, log=print) -> TrainResult:
    """Train a model as ``config`` says and write it to ``model_dir``.

    resume: continue from ``model_dir``'s trainer state; overwrite: start afresh in a non-empty dir.
    progress: show a progress bar (None: only when stderr is a terminal).
    Started by torchrun, every process calls this: they train one model together with
    DistributedDataParallel, and only the main process writes files and logs (attnmt.distributed).
    """
    worker = start_worker(config.train.device)
    try:
        return _train(worker, config, Path(model_dir), resume, overwrite, progress, log if worker.is_main else _silent)
    finally:
        stop_worker(worker)


def _train(worker: Worker, config: Config, model_dir: Path, resume: bool, overwrite: bool, progress: bool | None,
           log) -> TrainResult:
    train_cfg = config.train
    amp = MixedPrecision.create(train_cfg.precision, worker.device)
    _check_model_dir(model_dir, resume, overwrite)
    if resume:
        _check_same_model(config, model_dir)
    # Every process reads and checks the data before anything in model_dir is removed: a wrong path or
    # parallel files of different lengths must leave the model that --overwrite would replace intact.
    corpora = read_corpora(config)
    worker.barrier()  # every process has looked at model_dir and the data before the main one changes it
    if worker.is_main:
        model_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(model_dir)  # what a run killed in the middle of a write left behind
        if overwrite and not resume:
            remove_run_files(model_dir)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    seed_everything(train_cfg.seed + worker.rank)  # dropout differs between processes; DDP copies rank 0's weights

    data = _prepare_data(worker, config, corpora, model_dir, resume, log)
    if worker.is_main and not resume:
        atomic_write_text(model_dir / CONFIG_FILE, config.to_yaml())
    model = Seq2Seq.from_config(config.model, data.src_tokenizer.vocab_size, data.trg_tokenizer.vocab_size)
    model.to(worker.device)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    state = TrainerState()
    if resume:
        state = load_trainer_state(model_dir / TRAINER_STATE_FILE, model, optimizer, scheduler, amp.scaler, worker.rank)
        log(f"resuming at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
        if state.world_size != worker.world_size:
            log(f"the checkpoint was written by {state.world_size} process(es), this run has {worker.world_size}: "
                "the data position carries over; a process the checkpoint has no random state for keeps its seed")
    parallel_model = worker.wrap(model)  # what training steps call: DDP around model, or model itself
    batches_per_step = worker.world_size * train_cfg.accumulate
    log(f"model: {model.num_parameters():,} parameters; {len(data.train_src)} training pairs")
    log(f"training {_where(worker)} in {train_cfg.precision}; each step: {batches_per_step} batch(es) of at most "
        f"{train_cfg.batch_tokens} tokens")

    metrics = MetricsLog(model_dir, enabled=worker.is_main)
    if resume:
        metrics.write("resume", step=state.step, epoch=state.epoch + 1, batch_in_epoch=state.batch_in_epoch)
    validations: list[dict[str, Any]] = []
    started = time.perf_counter() - state.elapsed_seconds
    bar = TrainingProgress(_planned_steps(train_cfg, data, batches_per_step), train_cfg.max_time, state.step,
                           state.elapsed_seconds, show=bar_wanted(progress) and worker.is_main)
    window_tokens, window_loss = state.window_tokens, state.window_loss  # as the checkpoint left them
    window_start = time.perf_counter() - state.window_seconds
    checkpoint_every = train_cfg.checkpoint_every or train_cfg.valid_every
    checkpoint_step = state.step if resume else None  # the step of the trainer state on disk
    diverged = False
    # a resumed run may have nothing left to do
    stop_reason = _budget_spent(train_cfg, state, state.elapsed_seconds) or _early_stop(train_cfg, state)

    while not stop_reason:
        if state.epoch >= train_cfg.max_epochs:
            stop_reason = f"reached train.max_epochs={train_cfg.max_epochs}"
            break
        batches = token_batches(data.train_src_lengths, data.train_trg_lengths, train_cfg.batch_tokens,
                                shuffle=True, seed=train_cfg.seed, epoch=state.epoch)
        _check_enough_batches(len(batches), batches_per_step, train_cfg)
        for group in step_groups(batches, state.batch_in_epoch, batches_per_step):
            parallel_model.train()
            optimizer.zero_grad(set_to_none=True)
            shard = [collate([data.train_src[i] for i in indices], [data.train_trg[i] for i in indices], indices)
                     for indices in worker.shard(group)]
            step_tokens = sum(len(data.train_trg[i]) + 1 for indices in group for i in indices)  # +EOS; all processes
            local_loss = accumulate_gradients(parallel_model, shard, step_tokens, worker.world_size, amp,
                                              train_cfg.label_smoothing)
            state.batch_in_epoch += len(group)
            loss, elapsed = _agree(worker, local_loss, time.perf_counter() - started)
            problem = f"loss is {loss}" if not math.isfinite(loss) else ""
            if not problem:
                amp.scaler.unscale_(optimizer)  # fp16: the true gradients, to clip and measure
                # max_norm=inf only measures (the gradients are multiplied by exactly 1)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_grad_norm or math.inf)
                if not torch.isfinite(grad_norm):
                    problem = f"gradient norm is {float(grad_norm)}"
                    if amp.scaler.is_enabled():  # fp16: an overflow; the loss scale goes down
                        amp.scaler.update()
                        problem += f" (fp16 loss scale lowered to {amp.scaler.get_scale():g})"
            if problem:  # skip the step: the weights stay as they were
                optimizer.zero_grad(set_to_none=True)
                if _skip_nonfinite_step(problem, state, metrics, log) >= MAX_NONFINITE_IN_A_ROW:
                    stop_reason, diverged = f"{MAX_NONFINITE_IN_A_ROW} non-finite losses or gradients in a row", True
                    break
                continue
            state.nonfinite_steps = 0
            amp.scaler.step(optimizer)  # with fp32 and bf16: optimizer.step()
            amp.scaler.update()
            if train_cfg.schedule == "warmup_decay":
                scheduler.step()
            state.step += 1
            bar.advance(state.step, elapsed)
            window_tokens += step_tokens
            window_loss += loss

            if state.step % train_cfg.log_every == 0:
                seconds = time.perf_counter() - window_start
                entry = metrics.write(
                    "train", step=state.step, epoch=state.epoch + 1, loss=window_loss / window_tokens,
                    lr=optimizer.param_groups[0]["lr"], tokens_per_second=window_tokens / seconds,
                    elapsed=time.perf_counter() - started,
                )
                bar.show_loss(entry["loss"], entry["tokens_per_second"])
                window_tokens, window_loss, window_start = 0, 0.0, time.perf_counter()

            stop_reason = _budget_spent(train_cfg, state, elapsed)
            validation_due = state.step % train_cfg.valid_every == 0 or bool(stop_reason)
            if validation_due or state.step % checkpoint_every == 0:
                state.elapsed_seconds = time.perf_counter() - started
                state.window_tokens, state.window_loss = window_tokens, window_loss
                state.window_seconds = time.perf_counter() - window_start
                if validation_due:
                    validations.append(_validate_and_checkpoint(worker, model, optimizer, scheduler, amp.scaler, state,
                                                                data, config, model_dir, metrics, log))
                    if not stop_reason:
                        stop_reason = _early_stop(train_cfg, state)
                    window_start = time.perf_counter()  # validation time is not training throughput
                else:
                    _save_checkpoint(worker, model_dir, model, optimizer, scheduler, amp.scaler, state)
                checkpoint_step = state.step
            if stop_reason:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0

    bar.close()
    if diverged:  # nothing more is saved: the checkpoint on disk is the last good one
        metrics.write("stop", step=state.step, reason=stop_reason, elapsed=time.perf_counter() - started)
        metrics.close()
        raise TrainingError(_diverged_message(model_dir, state, checkpoint_step))
    if state.best_metric is None:  # stopped before any validation: keep what we have
        state.elapsed_seconds = time.perf_counter() - started
        validations.append(_validate_and_checkpoint(worker, model, optimizer, scheduler, amp.scaler, state, data, config,
                                                    model_dir, metrics, log))
    log(f"training stopped: {stop_reason}")
    metrics.write("stop", step=state.step, reason=stop_reason, elapsed=time.perf_counter() - started)
    metrics.close()
    return TrainResult(model_dir, state.step, time.perf_counter() - started, state.best_metric, stop_reason, validations,
                       worker.rank)


def accumulate_gradients(model: nn.Module, batches: list[Batch], step_tokens: int, world_size: int,
                         amp: MixedPrecision, label_smoothing: float) -> torch.Tensor:
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
                loss = batch_loss(model, batch, label_smoothing)
            amp.scaler.scale(loss * world_size / step_tokens).backward()
        total += loss.detach()
    return total


def _agree(worker: Worker, loss: torch.Tensor, elapsed: float) -> tuple[float, float]:
    """The step's loss summed over the processes, and their mean elapsed time: the same numbers on
    every process, so that all of them take the same decisions (skip the step, log, stop)."""
    if worker.world_size == 1:
        return loss.item(), elapsed
    # float32 as the loss itself (a sum of the same float32 terms, whichever process holds which)
    totals = torch.stack([loss, torch.tensor(elapsed, dtype=loss.dtype, device=loss.device)])
    loss_sum, elapsed_sum = worker.all_sum(totals).tolist()
    return loss_sum, elapsed_sum / worker.world_size


def _silent(message: str) -> None:
    """The log of the processes other than the main one."""


def _where(worker: Worker) -> str:
    if worker.world_size == 1:
        return f"on {worker.device}"
    backend = "NCCL" if worker.device.type == "cuda" else "gloo"
    return f"on {worker.world_size} processes ({backend}; the main one on {worker.device})"


def _prepare_data(worker: Worker, config: Config, corpora: Corpora, model_dir: Path, resume: bool,
                  log) -> PreparedData:
    """The main process trains the tokenizers (unless resuming); the others wait, then load them."""
    data = None
    if worker.is_main:
        data = prepare_data(config, model_dir, reuse_tokenizers=resume, log=log, corpora=corpora)
    worker.barrier()
    if data is None:
        for path in set(tokenizer_files(model_dir, config.vocab.joint)):
            if not path.is_file():
                raise TrainingError(f"process {worker.rank} cannot see {path}, which the main process wrote: on "
                                    "several machines, --model-dir must be on a file system that all of them share")
        data = prepare_data(config, model_dir, reuse_tokenizers=True, log=log, corpora=corpora)
    return data


def _save_checkpoint(worker: Worker, model_dir: Path, model: Seq2Seq, optimizer, scheduler, scaler,
                     state: TrainerState) -> None:
    """The trainer state, with the random state of every process; the main process writes it."""
    rng_states = worker.gather(rng_state())
    state.world_size = worker.world_size
    if worker.is_main:
        save_trainer_state(model_dir / TRAINER_STATE_FILE, model, optimizer, scheduler, state, scaler, rng_states)


def _check_model_dir(model_dir: Path, resume: bool, overwrite: bool) -> None:
    has_model = (model_dir / CONFIG_FILE).exists()
    if resume and not (model_dir / TRAINER_STATE_FILE).exists():
        raise TrainingError(f"cannot resume: {model_dir / TRAINER_STATE_FILE} does not exist")
    if has_model and not resume and not overwrite:
        raise TrainingError(
            f"{model_dir} already holds a model; pass --resume to continue it or --overwrite to start afresh"
        )


def _check_same_model(config: Config, model_dir: Path) -> None:
    """--resume must rebuild the same model and tokenizers as the run it continues."""
    saved = load_config_file(model_dir)
    changed = [f"{section}.{key}" for section in ("model", "vocab")
               for key, value in getattr(config, section).__dict__.items()
               if getattr(getattr(saved, section), key) != value]
    if changed:
        raise TrainingError(f"cannot resume: {', '.join(changed)} differ from {model_dir / CONFIG_FILE}; "
                            "the model and vocab settings must stay as they were")


def _skip_nonfinite_step(problem: str, state: TrainerState, metrics: MetricsLog, log) -> int:
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
    hypotheses = decode_ids(model, data.valid_src[:limit], config.decode, beam_size=1, device=device)
    outputs = [data.trg_tokenizer.decode(h[0].tokens) for h in hypotheses]
    references = data.valid_references[:limit]
    bleu = score_corpus(outputs, references, metrics=("bleu",))[0]
    exact = sum(o == r for o, r in zip(outputs, references)) / max(len(references), 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 100.0)), "bleu": bleu.value, "exact_match": exact,
            "bleu_signature": bleu.signature, "example": {"hypothesis": outputs[0], "reference": references[0]}}


def _validate_and_checkpoint(worker: Worker, model, optimizer, scheduler, scaler, state: TrainerState,
                             data: PreparedData, config: Config, model_dir: Path, metrics: MetricsLog,
                             log) -> dict[str, Any]:
    """Validate, keep the best weights, write the trainer state (the 'last' checkpoint). The main
    process validates; the others receive its results and update their state just as it does."""
    result = worker.broadcast(validate(model, data, config) if worker.is_main else None)
    metric_name = config.train.early_stopping_metric
    value = result[metric_name]
    better = state.best_metric is None or (value > state.best_metric if metric_name == "bleu" else value < state.best_metric)
    if better:
        state.best_metric, state.best_step = value, state.step
        state.validations_without_improvement = 0
        if worker.is_main:
            save_weights(model, model_dir / WEIGHTS_FILE)
    else:
        state.validations_without_improvement += 1
    if config.train.schedule == "plateau":
        scheduler.step(value)
    _save_checkpoint(worker, model_dir, model, optimizer, scheduler, scaler, state)
    entry = metrics.write("valid", step=state.step, elapsed=state.elapsed_seconds, best=better,
                          lr=optimizer.param_groups[0]["lr"], **{k: v for k, v in result.items() if k != "example"})
    log(f"step {state.step}: valid loss {result['loss']:.3f}, ppl {result['perplexity']:.2f}, "
        f"BLEU {result['bleu']:.2f}, exact {100 * result['exact_match']:.1f}%{' (best)' if better else ''}; "
        f"e.g. {result['example']['hypothesis']!r}")
    return entry
