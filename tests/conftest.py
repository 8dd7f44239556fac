"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
