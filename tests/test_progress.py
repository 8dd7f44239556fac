"""The training progress bar: steps out of a step budget, or seconds out of a time budget."""

from __future__ import annotations

import io

import pytest

from attnmt.training.progress import TrainingProgress


def drawn(monkeypatch, **arguments) -> tuple[TrainingProgress, io.StringIO]:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    return TrainingProgress(show=True, **arguments), stderr


def last_line(stderr: io.StringIO) -> str:
    return stderr.getvalue().replace("\n", "\r").rstrip("\r").split("\r")[-1]


def test_a_step_budget_counts_steps(monkeypatch):
    bar, stderr = drawn(monkeypatch, planned_steps=200, max_time=0.0, step=0, elapsed=0.0)
    for step in range(1, 51):
        bar.advance(step, elapsed=step * 0.01)
    bar.show_loss(2.5, 1234.4)
    bar.close()
    assert "50/200" in last_line(stderr) and " 25%" in last_line(stderr)
    assert "loss=2.500" in last_line(stderr) and "tok_s=1234" in last_line(stderr)


def test_a_time_budget_counts_seconds_and_shows_the_step_count(monkeypatch):
    bar, stderr = drawn(monkeypatch, planned_steps=None, max_time=60.0, step=0, elapsed=0.0)
    bar.advance(1, elapsed=14.6)
    bar.show_loss(3.25, 800.0)
    bar.advance(2, elapsed=15.2)
    bar.close()
    line = last_line(stderr)
    assert " 25%" in line and "15/60s" in line
    assert "step=2" in line and "loss=3.250" in line and "tok_s=800" in line


@pytest.mark.parametrize("planned_steps, max_time, expected", [(200, 0.0, "120/200"), (None, 3600.0, "1800/3600s")])
def test_a_resumed_run_starts_where_it_stopped(monkeypatch, planned_steps, max_time, expected):
    bar, stderr = drawn(monkeypatch, planned_steps=planned_steps, max_time=max_time, step=120, elapsed=1800.0)
    bar.close()
    assert expected in last_line(stderr)


def test_the_time_bar_stops_at_the_budget(monkeypatch):
    """The last step ends after the budget is spent; the bar shows the budget, not more."""
    bar, stderr = drawn(monkeypatch, planned_steps=None, max_time=60.0, step=0, elapsed=0.0)
    bar.advance(500, elapsed=61.3)
    bar.close()
    assert "100%" in last_line(stderr) and "60/60s" in last_line(stderr) and "step=500" in last_line(stderr)


def test_nothing_is_drawn_when_the_bar_is_not_shown(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    bar = TrainingProgress(planned_steps=None, max_time=60.0, step=0, elapsed=0.0, show=False)
    bar.advance(1, elapsed=1.0)
    bar.show_loss(1.0, 10.0)
    bar.close()
    assert stderr.getvalue() == ""
