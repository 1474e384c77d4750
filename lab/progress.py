"""Progress a person can watch: one line per run in flight.

`train` reports a run's progress (`Progress`) every PROGRESS_S seconds and at each evaluation. Where it goes:
- on a terminal, to `LiveBoard`: rich's live display in the process that schedules the runs, one line per run
  in flight refreshed in place, fed by every worker at once;
- otherwise (a file, CI, Ray's forwarded output), to `PlainLines`: a plain line at each evaluation and at least
  every PLAIN_EVERY_S seconds, no control characters.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

PROGRESS_S = 1.0  # seconds between a run's progress reports
PLAIN_EVERY_S = 60.0  # seconds between a run's plain lines when no evaluation comes in between


@dataclasses.dataclass
class Progress:
    label: str  # the run: 'agent env seed N'
    step: int
    steps: int  # the run's budget
    sps: float  # environment steps per second since this attempt started
    train_return: float | None  # mean of the latest (up to 10) training episodes
    eval_return: float | None  # the latest evaluation's
    evaluated: bool = False  # this report is an evaluation's

    @property
    def seconds_left(self) -> float:
        return (self.steps - self.step) / self.sps if self.sps > 0 else math.inf


def number(value: float | None) -> str:
    return f"{value:9.1f}" if value is not None else f"{'-':>9}"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class PlainLines:
    """Plain lines for logs: one at each evaluation and one at least every `every_s` seconds per run."""

    def __init__(self, every_s: float = PLAIN_EVERY_S, stream=None):
        self.every_s, self.stream = every_s, stream
        self.printed: dict[str, float] = {}  # label -> when its last line was printed

    def update(self, progress: Progress) -> None:
        now = time.monotonic()
        if not progress.evaluated and now - self.printed.get(progress.label, -math.inf) < self.every_s:
            return
        self.printed[progress.label] = now
        percent = 100 * progress.step / progress.steps
        print(f"[{progress.label}] {progress.step:>9}/{progress.steps} steps {percent:3.0f}%  "
              f"train {number(progress.train_return)}  eval {number(progress.eval_return)}  "
              f"{progress.sps:7.0f} steps/s  {duration(progress.seconds_left)} left",
              file=self.stream or sys.stdout, flush=True)

    def finish(self, label: str) -> None:
        self.printed.pop(label, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class LiveBoard:
    """rich's live display: a line per run in flight (steps, %, steps/s, time left, latest returns), refreshed
    in place; a run's line goes when it finishes. Other output of this process prints above it."""

    def __init__(self):
        from rich.progress import Progress as RichProgress, TextColumn
        # One text column, most telling first: a narrow terminal cuts the end of the line, not its middle.
        self.display = RichProgress(TextColumn("{task.description}", markup=False), refresh_per_second=2)
        self.tasks: dict[str, int] = {}

    def update(self, progress: Progress) -> None:
        text = (f"[{progress.label}] {progress.step:>8}/{progress.steps} {100 * progress.step / progress.steps:3.0f}%"
                f"  {progress.sps:6.0f} steps/s  {duration(progress.seconds_left):>7} left"
                f"  train {number(progress.train_return)}  eval {number(progress.eval_return)}")
        if progress.label not in self.tasks:
            self.tasks[progress.label] = self.display.add_task(text)
        self.display.update(self.tasks[progress.label], description=text)

    def finish(self, label: str) -> None:
        task = self.tasks.pop(label, None)
        if task is not None:
            self.display.remove_task(task)

    def __enter__(self):
        self.display.start()
        return self

    def __exit__(self, *exc):
        self.display.stop()
        return False


def live_output() -> bool:
    """Whether this process's output is a terminal a live display can redraw."""
    return sys.stdout.isatty()


def board():
    """The display for this process's output: LiveBoard on a terminal, PlainLines otherwise."""
    return LiveBoard() if live_output() else PlainLines()
