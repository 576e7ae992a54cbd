"""Where a pipeline run stands: one line per step with its time, and "step k of N, ETA" overall.

A run of several characters takes hours and is mostly watched from afar (a terminal left open, a log file, the
watcher). What a person needs is which step runs now, how long each one took and when the whole run ends —
not a per-image bar for every inner step. So:

- `start` prints `step 3 of 12: krnk face train` with the estimated time left (from how long the same steps
  took last time, when the runner passes that; else from the same step of another stage in this run, else
  from this run's average) and, on a terminal, a bar;
- `done` prints `krnk face train: ran in 41.2 s` (or failed / blocked);
- when stdout is not a terminal the lines are plain ASCII without bar, and `inner_bars` tells the caller to
  switch the steps' own tqdm bars off (their carriage-return refreshes would fill a log with thousands of
  partial lines).

The runner knows nothing about terminals: it calls `on_step(planned step, result row)` as each step is decided,
starts and ends (`run_target(…, on_step=progress.on_step)`); `expect(steps_to_run(plans))` announces what the
dry plan says will (or may) run, with how long each took last time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from charframe.pipeline.runner import Records

BAR_WIDTH = 20


def inner_bars(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Whether the steps' own progress bars should show: not when quiet, and only on a terminal (tqdm writes
    to stderr)."""
    stream = stream if stream is not None else sys.stderr
    return not quiet and _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def steps_to_run(plans: Iterable[Sequence[Any]]) -> list[tuple[str, str, str, float | None]]:
    """(owner, stage, step, seconds it took last time) of each planned step that runs or may run (`PlannedStep`s
    of `runner.plan_jobs`; the time comes from the step's record)."""
    records = Records()
    out = []
    for plan in plans:
        for p in plan:
            if not p.may_run:
                continue
            entry = records.of(p.job).outputs.get(p.record) or {}
            out.append((p.job.owner, p.job.name, p.step.name, entry.get("seconds") or None))
    return out


def duration(seconds: float) -> str:
    """`0.4 s`, `41.2 s`, `4 min 10 s`, `2 h 05 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class Progress:
    """Prints the progress of the stale steps of a run (see the module text)."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    tty: bool | None = None                      # None: ask the stream
    clock: Callable[[], float] = time.monotonic
    total: int = 0
    finished: int = 0
    _estimates: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _taken: list[float] = field(default_factory=list)
    _by_step: dict[str, float] = field(default_factory=dict)
    _pending: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tty is None:
            self.tty = _isatty(self.stream)

    def expect(self, steps: Sequence[tuple[str, str, str, float | None]]) -> None:
        """Announce stale steps `(target, stage, step, seconds it took last time or None)` before they run."""
        for target, stage, step, seconds in steps:
            self.total += 1
            self._pending.append((target, stage, step))
            if seconds:
                self._estimates[(target, stage, step)] = seconds

    def eta(self) -> float | None:
        """Seconds left for the steps not finished yet; None when nothing is known to estimate from."""
        if not self._pending:
            return 0.0
        mean = sum(self._taken) / len(self._taken) if self._taken else None
        left = 0.0
        for key in self._pending:
            guess = self._estimates.get(key, self._by_step.get(key[2], mean))
            if guess is None:
                return None
            left += guess
        return left

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def start(self, target: str, stage: str, step: str) -> None:
        k = self.finished + 1
        n = max(self.total, k)
        eta = self.eta()
        when = f", about {duration(eta)} left" if eta is not None else ""
        if self.tty:
            filled = round(BAR_WIDTH * (k - 1) / n)
            bar = "█" * filled + "░" * (BAR_WIDTH - filled)
            self._write(f"{bar} step {k} of {n}: {target} {stage} {step}{when}")
        else:
            self._write(f"step {k} of {n}: {target} {stage} {step}{when}")

    def on_step(self, p: Any, row: Any) -> None:
        """The runner's `on_step(planned step, result row)`: a step starting, ending, or found up to date when
        reached (then it leaves the count)."""
        key = (p.job.owner, p.job.name, p.step.name)
        if row.status == "running":
            self.start(*key)
        elif row.status in ("ran", "failed"):
            self.done(*key, row.status, row.seconds)
        elif key in self._pending:  # it might have had to run (an upstream step ran), but did not
            self._pending.remove(key)
            self.total -= 1

    def done(self, target: str, stage: str, step: str, status: str, seconds: float) -> None:
        self.finished += 1
        key = (target, stage, step)
        if key in self._pending:
            self._pending.remove(key)
        if status in ("ran", "failed"):
            self._taken.append(seconds)
            self._by_step[step] = seconds
        what = {"ran": "ran in", "failed": "FAILED after"}.get(status)
        tail = f"{what} {duration(seconds)}" if what else status
        mark = {"ran": "✓ ", "failed": "✗ "}.get(status, "· ") if self.tty else ""
        self._write(f"{mark}{target} {stage} {step}: {tail}")
