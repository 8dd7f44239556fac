"""The training progress bar, on stderr.

A run bounded by steps (or epochs) counts steps out of that budget. A run bounded only by time
(``train.max_time`` set, ``train.max_steps`` 0) cannot know its number of steps in advance, so its
bar counts seconds out of the time budget instead: tqdm's ETA is then the time left, and the step
count goes beside the loss and the throughput.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

# l_bar is "{desc}: {percentage}%|"; the seconds are shown as whole numbers, not as 12.3456/60.0
_TIME_BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]"


def bar_wanted(progress: bool | None) -> bool:
    """progress: True or False as asked; None: a bar only when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


def counting_bar(total: int | None, description: str, unit: str, show: bool) -> tqdm:
    """A bar counting ``unit`` (lines, pairs) out of ``total`` (None: unknown), on stderr if ``show``."""
    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, disable=not show, dynamic_ncols=True)


class TrainingProgress:
    def __init__(self, planned_steps: int | None, max_time: float, step: int, elapsed: float, show: bool) -> None:
        """planned_steps: the step budget, None when only ``max_time`` (seconds) bounds the run;
        step, elapsed: where the run starts (a resumed run is not at 0)."""
        self.by_time = planned_steps is None and max_time > 0
        self.postfix: dict[str, str] = {}
        if self.by_time:
            self.bar = tqdm(total=max_time, initial=min(elapsed, max_time), unit="s", bar_format=_TIME_BAR_FORMAT,
                            disable=not show, dynamic_ncols=True)
            self.postfix["step"] = str(step)
            self.bar.set_postfix(self.postfix, refresh=False)
        else:
            self.bar = tqdm(total=planned_steps, initial=step, unit="step", disable=not show, dynamic_ncols=True)

    def advance(self, step: int, elapsed: float) -> None:
        """One more optimizer step, ``step`` in all, ``elapsed`` seconds into the time budget."""
        if self.by_time:
            self.postfix["step"] = str(step)
            self.bar.set_postfix(self.postfix, refresh=False)  # drawn by update(), at most every 0.1 s
            self.bar.update(min(elapsed, self.bar.total) - self.bar.n)
        else:
            self.bar.update(step - self.bar.n)

    def show_loss(self, loss: float, tokens_per_second: float) -> None:
        self.postfix.update(loss=f"{loss:.3f}", tok_s=f"{tokens_per_second:.0f}")
        self.bar.set_postfix(self.postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()
