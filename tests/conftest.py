"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One intra-op thread: the tests' models are tiny, and on a shared 2-core machine two spinning
# OpenMP threads per process make them up to 50x slower. Subprocesses (CLI tests) inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting)

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
MULTI30K_FILES = [f"{split}.{lang}.gz" for split in ("train", "val") for lang in ("en", "de")]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder (env ATTNMT_DATA, default <repo>/../shared/data) with Multi30k in it."""
    path = Path(os.environ.get("ATTNMT_DATA", REPO_ROOT.parent / "shared" / "data"))
    missing = [name for name in MULTI30K_FILES if not (path / "multi30k" / name).is_file()]
    if missing:
        pytest.skip(f"Multi30k not found: {path / 'multi30k'} lacks {', '.join(missing)} (set ATTNMT_DATA)")
    return path


def _train_toy_model(root: Path, attention: str, reverse: bool = False) -> Path:
    from attnmt.training.loop import train
    from toy import toy_config, write_toy_corpus

    train_prefix, valid_prefix = write_toy_corpus(root / "data", n_train=400)
    config = toy_config(train_prefix, valid_prefix)
    config.model.attention = attention
    if reverse:
        config.data.src_lang, config.data.trg_lang = config.data.trg_lang, config.data.src_lang
    model_dir = root / "model"
    train(config, model_dir, progress=False, log=lambda message: None)
    return model_dir


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory) -> Path:
    """A tiny model trained for a few seconds on the toy number-word task (tests/toy.py)."""
    return _train_toy_model(tmp_path_factory.mktemp("toy"), "general")


@pytest.fixture(scope="session")
def toy_none_model_dir(tmp_path_factory) -> Path:
    """The same without attention (``model.attention: none``), trained the same way."""
    return _train_toy_model(tmp_path_factory.mktemp("toy_none"), "none")


@pytest.fixture(scope="session")
def toy_reverse_model_dir(tmp_path_factory) -> Path:
    """The toy task the other way round (German → English), trained the same way."""
    return _train_toy_model(tmp_path_factory.mktemp("toy_reverse"), "general", reverse=True)
