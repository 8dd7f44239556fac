"""Training metrics: one JSON line per event in ``metrics.jsonl``, mirrored to TensorBoard when the
``tensorboard`` package is installed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from attnmt.checkpoint import METRICS_FILE


class MetricsLog:
    def __init__(self, model_dir: Path) -> None:
        self.file = open(Path(model_dir) / METRICS_FILE, "a", encoding="utf-8")
        self.writer = _tensorboard_writer(Path(model_dir) / "tensorboard")

    def write(self, event: str, **values: Any) -> dict[str, Any]:
        """Append one event; numbers also go to TensorBoard as ``event/name`` at ``step``."""
        entry = {"event": event, "time": time.time(), **values}
        self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.writer is not None and "step" in values:
            for name, value in values.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{event}/{name}", value, values["step"])
        return entry

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: pip install attnmt[tensorboard]
        return None
    return SummaryWriter(log_dir=str(log_dir))
