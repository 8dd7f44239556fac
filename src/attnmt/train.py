"""The training loop: batches → loss → step, validation, checkpoints, early stopping.

Read ``train`` top to bottom: data and tokenizers are prepared, the model and optimizer built, and
the loop runs until the step, time or epoch budget is spent or validation stops improving. Logging
and checkpointing hang off it as small functions.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

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
    save_trainer_state,
    save_weights,
)
from attnmt.config import Config, TrainConfig
from attnmt.data.batching import Batch, collate, token_batches
from attnmt.data.vocab import PAD_ID
from attnmt.evaluate import score_corpus
from attnmt.metrics_log import MetricsLog
from attnmt.model import Seq2Seq
from attnmt.prepare import PreparedData, prepare_data
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
        logits,
        batch.trg_output[real],  # (n_trg_tokens,)
        label_smoothing=label_smoothing,
        reduction="sum",
    )


def train(config: Config, model_dir: Path | str, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, log=print) -> TrainResult:
    """Train a model as ``config`` says and write it to ``model_dir``.

    resume: continue from ``model_dir``'s trainer state; overwrite: start afresh in a non-empty dir.
    progress: show a progress bar (None: only when stderr is a terminal).
    """
    model_dir = Path(model_dir)
    _check_model_dir(model_dir, resume, overwrite)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(model_dir)  # what a run killed in the middle of a write left behind
    if resume:
        _check_same_model(config, model_dir)
    elif overwrite:
        remove_run_files(model_dir)
    train_cfg = config.train
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    seed_everything(train_cfg.seed)

    data = prepare_data(config, model_dir, reuse_tokenizers=resume, log=log)
    if not resume:
        atomic_write_text(model_dir / CONFIG_FILE, config.to_yaml())
    model = Seq2Seq.from_config(config.model, data.src_tokenizer.vocab_size, data.trg_tokenizer.vocab_size)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    state = TrainerState()
    if resume:
        state = load_trainer_state(model_dir / TRAINER_STATE_FILE, model, optimizer, scheduler)
        log(f"resuming at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
    log(f"model: {model.num_parameters():,} parameters; {len(data.train_src)} training pairs")

    metrics = MetricsLog(model_dir)
    if resume:
        metrics.write("resume", step=state.step, epoch=state.epoch + 1, batch_in_epoch=state.batch_in_epoch)
    validations: list[dict[str, Any]] = []
    started = time.perf_counter() - state.elapsed_seconds
    total_steps = _planned_steps(train_cfg, data, state)
    bar = tqdm(total=total_steps, initial=state.step, disable=_quiet(progress), unit="step", dynamic_ncols=True)
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
        for indices in batches[state.batch_in_epoch:]:
            model.train()
            batch = collate([data.train_src[i] for i in indices], [data.train_trg[i] for i in indices], indices)
            loss = batch_loss(model, batch, train_cfg.label_smoothing)
            state.batch_in_epoch += 1
            optimizer.zero_grad(set_to_none=True)
            problem = f"loss is {loss.item()}" if not torch.isfinite(loss) else ""
            if not problem:
                (loss / batch.n_trg_tokens).backward()
                # max_norm=inf only measures (the gradients are multiplied by exactly 1)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_grad_norm or math.inf)
                problem = f"gradient norm is {float(grad_norm)}" if not torch.isfinite(grad_norm) else ""
            if problem:  # skip the step: the weights stay as they were
                optimizer.zero_grad(set_to_none=True)
                if _skip_nonfinite_step(problem, state, metrics, log) >= MAX_NONFINITE_IN_A_ROW:
                    stop_reason, diverged = f"{MAX_NONFINITE_IN_A_ROW} non-finite losses or gradients in a row", True
                    break
                continue
            state.nonfinite_steps = 0
            optimizer.step()
            if train_cfg.schedule == "warmup_decay":
                scheduler.step()
            state.step += 1
            bar.update(1)
            window_tokens += batch.n_trg_tokens
            window_loss += loss.item()

            if state.step % train_cfg.log_every == 0:
                seconds = time.perf_counter() - window_start
                entry = metrics.write(
                    "train", step=state.step, epoch=state.epoch + 1, loss=window_loss / window_tokens,
                    lr=optimizer.param_groups[0]["lr"], tokens_per_second=window_tokens / seconds,
                    elapsed=time.perf_counter() - started,
                )
                bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_second']:.0f}")
                window_tokens, window_loss, window_start = 0, 0.0, time.perf_counter()

            stop_reason = _budget_spent(train_cfg, state, time.perf_counter() - started)
            validation_due = state.step % train_cfg.valid_every == 0 or bool(stop_reason)
            if validation_due or state.step % checkpoint_every == 0:
                state.elapsed_seconds = time.perf_counter() - started
                state.window_tokens, state.window_loss = window_tokens, window_loss
                state.window_seconds = time.perf_counter() - window_start
                if validation_due:
                    validations.append(_validate_and_checkpoint(model, optimizer, scheduler, state, data, config,
                                                                model_dir, metrics, log))
                    if not stop_reason:
                        stop_reason = _early_stop(train_cfg, state)
                    window_start = time.perf_counter()  # validation time is not training throughput
                else:
                    save_trainer_state(model_dir / TRAINER_STATE_FILE, model, optimizer, scheduler, state)
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
    if not (model_dir / WEIGHTS_FILE).exists():  # stopped before any validation: keep what we have
        state.elapsed_seconds = time.perf_counter() - started
        validations.append(_validate_and_checkpoint(model, optimizer, scheduler, state, data, config, model_dir, metrics, log))
    log(f"training stopped: {stop_reason}")
    metrics.write("stop", step=state.step, reason=stop_reason, elapsed=time.perf_counter() - started)
    metrics.close()
    return TrainResult(model_dir, state.step, time.perf_counter() - started, state.best_metric, stop_reason, validations)


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


def _quiet(progress: bool | None) -> bool:
    return not (sys.stderr.isatty() if progress is None else progress)


def _planned_steps(train_cfg: TrainConfig, data: PreparedData, state: TrainerState) -> int | None:
    if train_cfg.max_steps:
        return train_cfg.max_steps
    if train_cfg.max_time:
        return None  # time-bounded: tqdm shows the rate, not an ETA it cannot know
    per_epoch = len(token_batches(data.train_src_lengths, data.train_trg_lengths, train_cfg.batch_tokens,
                                  shuffle=False, seed=train_cfg.seed, epoch=0))
    return per_epoch * train_cfg.max_epochs


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
    """Validation loss and perplexity (teacher forcing) and greedy BLEU against the raw references."""
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for indices in token_batches(data.valid_src_lengths, data.valid_trg_lengths, config.train.batch_tokens,
                                 shuffle=False, seed=0, epoch=0):
        batch = collate([data.valid_src[i] for i in indices], [data.valid_trg[i] for i in indices], indices)
        total_loss += float(batch_loss(model, batch, 0.0))
        total_tokens += batch.n_trg_tokens
    loss = total_loss / max(total_tokens, 1)
    limit = config.train.valid_max_sentences or len(data.valid_src)
    hypotheses = decode_ids(model, data.valid_src[:limit], config.decode, beam_size=1)
    outputs = [data.trg_tokenizer.decode(h[0].tokens) for h in hypotheses]
    references = data.valid_references[:limit]
    bleu = score_corpus(outputs, references, metrics=("bleu",))[0]
    exact = sum(o == r for o, r in zip(outputs, references)) / max(len(references), 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 100.0)), "bleu": bleu.value, "exact_match": exact,
            "bleu_signature": bleu.signature, "example": {"hypothesis": outputs[0], "reference": references[0]}}


def _validate_and_checkpoint(model, optimizer, scheduler, state: TrainerState, data: PreparedData, config: Config,
                             model_dir: Path, metrics: MetricsLog, log) -> dict[str, Any]:
    """Validate, keep the best weights, write the trainer state (the 'last' checkpoint)."""
    result = validate(model, data, config)
    metric_name = config.train.early_stopping_metric
    value = result[metric_name]
    better = state.best_metric is None or (value > state.best_metric if metric_name == "bleu" else value < state.best_metric)
    if better:
        state.best_metric, state.best_step = value, state.step
        state.validations_without_improvement = 0
        save_weights(model, model_dir / WEIGHTS_FILE)
    else:
        state.validations_without_improvement += 1
    if config.train.schedule == "plateau":
        scheduler.step(value)
    save_trainer_state(model_dir / TRAINER_STATE_FILE, model, optimizer, scheduler, state)
    entry = metrics.write("valid", step=state.step, elapsed=state.elapsed_seconds, best=better,
                          lr=optimizer.param_groups[0]["lr"], **{k: v for k, v in result.items() if k != "example"})
    log(f"step {state.step}: valid loss {result['loss']:.3f}, ppl {result['perplexity']:.2f}, "
        f"BLEU {result['bleu']:.2f}, exact {100 * result['exact_match']:.1f}%{' (best)' if better else ''}; "
        f"e.g. {result['example']['hypothesis']!r}")
    return entry
