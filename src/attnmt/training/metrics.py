"""Training metrics: one JSON line per event in ``metrics.jsonl``, mirrored to TensorBoard when the
``tensorboard`` package is installed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from attnmt.store import METRICS_FILE


class MetricsLog:
    def __init__(self, model_dir: Path, enabled: bool = True) -> None:
        """enabled=False (the processes of a distributed run but the main one): ``write`` still returns
        each event, but nothing is written anywhere."""
        self.file = self.writer = None
        if enabled:
            path = Path(model_dir) / METRICS_FILE
            _drop_torn_last_line(path)
            self.file = open(path, "a", encoding="utf-8")
            self.writer = _tensorboard_writer(Path(model_dir) / "tensorboard")

    def write(self, event: str, **values: Any) -> dict[str, Any]:
        """Append one event; numbers also go to TensorBoard as ``event/name`` at ``step``."""
        entry = {"event": event, "time": time.time(), **values}
        if self.file is None:
            return entry
        self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.writer is not None and "step" in values:
            for name, value in values.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{event}/{name}", value, values["step"])
        return entry

    def close(self) -> None:
        """Close the file and the TensorBoard writer; closing again does nothing."""
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
        self.file = self.writer = None


def _drop_torn_last_line(path: Path) -> None:
    """A run killed in the middle of a write leaves half a line: cut it, so every line stays JSON."""
    if not path.is_file():
        return
    with open(path, "rb+") as handle:
        size = handle.seek(0, 2)
        if size == 0:
            return
        tail_start = max(0, size - (1 << 16))
        handle.seek(tail_start)
        tail = handle.read()
        if tail.endswith(b"\n"):
            return
        last_newline = tail.rfind(b"\n")
        if last_newline < 0 and tail_start > 0:
            return  # a line longer than 64 KiB: leave it alone
        handle.truncate(tail_start + last_newline + 1)


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: pip install attnmt[tensorboard]
        return None
    return SummaryWriter(log_dir=str(log_dir))
