"""Plan and run the steps of characters and groups: only what is stale, and everything downstream of it.

`plan_jobs` decides without running anything (and without importing torch): a step is stale when its manifest
says so (`manifest.stale_reason`), when it reads a file that an earlier stale step will rewrite, when
`force` is set, or from the `from_step` on. `run_target` takes the run lock of every character involved,
runs the stale steps in order and records each manifest after its step succeeded. `rerun` does that for
many targets, going on past one that fails; the caller prints `StepResult`s as the summary table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from charframe.errors import CharframeError
from charframe.pipeline import manifest as mf
from charframe.pipeline.lock import run_lock
from charframe.pipeline.stages import StageJob, find_character_files, find_groups, target_jobs
from charframe.pipeline.steps import STEPS, RunContext, Step, resolve

log = logging.getLogger(__name__)


class StepObserver(Protocol):
    """What the runner tells about the stale steps (`charframe.pipeline.progress.Progress` prints it)."""

    def expect(self, steps: Sequence[tuple[str, str, str, float | None]]) -> None: ...
    def start(self, target: str, stage: str, step: str) -> None: ...
    def done(self, target: str, stage: str, step: str, status: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class Options:
    stage: str = "all"
    from_step: str | None = None
    until_step: str | None = None
    force: bool = False
    progress: bool = True


@dataclass
class PlannedStep:
    job: StageJob
    step: Step
    reason: str | None          # why it must run; None = up to date
    skipped: bool = False       # outside from_step..until_step

    @property
    def manifest(self) -> Path:
        return self.job.state_dir / f"{self.job.name}.{self.step.name}.json"

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "stale" if self.reason else "up to date"


@dataclass
class StepResult:
    target: str
    stage: str
    step: str
    status: str                 # ran | up to date | skipped | failed | blocked
    seconds: float = 0.0
    message: str = ""
    owner: str = ""             # whose step: the character's keyword or the group's name (a group file's rows)


@dataclass
class RunReport:
    results: list[StepResult] = field(default_factory=list)

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ran(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "ran"]


def _index(table: Sequence[Step], name: str | None, param: str) -> int | None:
    if name is None:
        return None
    names = [s.name for s in table]
    if name not in names:
        raise CharframeError(f"unknown step {name!r} for {{param}}; steps: {', '.join(names)}", param=param)
    return names.index(name)


def plan_jobs(jobs: Iterable[StageJob], options: Options = Options(), table: Sequence[Step] = STEPS) -> list[PlannedStep]:
    """Every step of every job, in run order, with the reason it must run (None = up to date)."""
    first, last = _index(table, options.from_step, "from_step"), _index(table, options.until_step, "until_step")
    planned: list[PlannedStep] = []
    dirty: list[mf.FileSet] = []
    for job in jobs:
        for i, step in enumerate(table):
            if job.stage not in step.stages:
                continue
            if (first is not None and i < first) or (last is not None and i > last):
                planned.append(PlannedStep(job, step, None, skipped=True))
                continue
            inputs, outputs = step.inputs(job), step.outputs(job)
            if options.force:
                reason: str | None = "forced"
            elif first is not None:
                reason = "from " + table[first].name
            else:
                upstream = next((d for d in dirty if any(d.overlaps(i_) for i_ in inputs)), None)
                reason = f"upstream output {upstream.root.name} changes" if upstream else None
                if reason is None:
                    p = PlannedStep(job, step, None)
                    reason = mf.stale_reason(p.manifest, mf.params_digest(step.params(job), job.root), inputs, outputs, job.root)
            if reason:
                dirty += outputs
            planned.append(PlannedStep(job, step, reason))
    return planned


def _describe(fs: mf.FileSet, root: Path) -> str:
    try:
        where = fs.root.relative_to(root)
    except ValueError:
        where = fs.root
    if not fs.patterns:
        return str(where)
    return f"{where}/{{{','.join(fs.patterns)}}} ({len(fs.files())} files)"


def describe_plan(planned: Sequence[PlannedStep]) -> str:
    """The dry-run text: per step its inputs, outputs and whether it is up to date."""
    lines = []
    for p in planned:
        head = f"{p.job.owner:<12} {p.job.name:<10} {p.step.name:<9} "
        if p.skipped:
            lines.append(head + "skipped")
            continue
        lines.append(head + ("up to date" if p.reason is None else f"RUN ({p.reason})"))
        root = p.job.root
        lines += [f"    in   {_describe(fs, root)}" for fs in p.step.inputs(p.job)]
        lines += [f"    out  {_describe(fs, root)}" for fs in p.step.outputs(p.job)]
    return "\n".join(lines)


def _failure(e: BaseException, step: str) -> str:
    if isinstance(e, CharframeError):
        return str(e)
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return (f"{where}{e.strerror or e} — cannot write the output (disk full, or a read-only/unwritable folder?); "
                f"free space or fix the folder and rerun: finished steps are kept")
    return f"{type(e).__name__}: {e}"


def run_planned(planned: Sequence[PlannedStep], target: str, options: Options = Options(),
                observer: StepObserver | None = None) -> RunReport:
    """Run the stale steps in order; after a failure the remaining stale steps of the target are blocked.
    `observer` (`pipeline.progress.Progress`) hears of each stale step before and after it runs."""
    report = RunReport()
    ctx = RunContext(progress=options.progress)
    failed = False
    if observer is not None:
        observer.expect([(p.job.owner, p.job.name, p.step.name, getattr(mf.read_manifest(p.manifest), "seconds", None))
                         for p in planned if p.reason])
    for p in planned:
        row = StepResult(target, p.job.name, p.step.name, p.status if p.reason is None else "stale", owner=p.job.owner)
        report.results.append(row)
        if p.reason is None:
            continue
        if failed:
            row.status = "blocked"
            continue
        log.info("%s %s: %s (%s)", p.job.owner, p.job.name, p.step.name, p.reason)
        if observer is not None:
            observer.start(p.job.owner, p.job.name, p.step.name)
        old = mf.read_manifest(p.manifest)
        mf.invalidate(p.manifest)
        start = time.perf_counter()
        try:
            params = mf.params_digest(p.step.params(p.job), p.job.root)
            inputs = mf.fingerprint(p.step.inputs(p.job), old.inputs if old else None, p.job.root)
            p.step.run(resolve(p.step.call, p.step.name), p.job, ctx)
            row.seconds = time.perf_counter() - start
            mf.record(p.manifest, params, inputs, p.step.outputs(p.job), row.seconds, p.job.root)
            row.status = "ran"
        except (CharframeError, OSError) as e:
            if getattr(e, "exit_code", 0) == 130:
                raise  # Ctrl-C inside the trainer (state saved): stop the run, the step stays stale
            row.seconds, row.status, row.message = time.perf_counter() - start, "failed", _failure(e, p.step.name)
            log.error("%s %s %s: %s", p.job.owner, p.job.name, p.step.name, row.message)
            failed = True
        finally:
            if observer is not None and row.status in ("ran", "failed"):
                observer.done(p.job.owner, p.job.name, p.step.name, row.status, row.seconds)
    return report


@contextlib.contextmanager
def _locks(jobs: Sequence[StageJob]):
    with contextlib.ExitStack() as stack:
        for owner, folder in sorted({(j.owner, j.state_dir) for j in jobs}):
            stack.enter_context(run_lock(folder, owner))
        yield


def run_target(path: str | os.PathLike, options: Options = Options(), table: Sequence[Step] = STEPS,
               dry_run: bool = False, observer: StepObserver | None = None) -> tuple[list[PlannedStep], RunReport]:
    """Plan (and unless `dry_run`, run) one character or group file."""
    jobs = target_jobs(Path(path), options.stage)
    if dry_run:
        return plan_jobs(jobs, options, table), RunReport()
    with _locks(jobs):
        planned = plan_jobs(jobs, options, table)
        return planned, run_planned(planned, Path(path).name, options, observer)


def all_targets(root: Path) -> list[Path]:
    """Every character file, then every group file, of the project."""
    return find_character_files(root) + find_groups(root)


def rerun(targets: Sequence[Path], options: Options = Options(), table: Sequence[Step] = STEPS,
          observer: StepObserver | None = None) -> RunReport:
    """Run the stale steps of each target; a target that fails (bad file, failing step, locked) is reported and
    the next one runs. Group files run their group stage only (their members are targets of their own)."""
    report = RunReport()
    for path in targets:
        stage = "group" if path.name.endswith(".group.toml") and options.stage == "all" else options.stage
        try:
            _, r = run_target(path, Options(stage, options.from_step, options.until_step, options.force, options.progress), table,
                              observer=observer)
            report.results += r.results
        except (CharframeError, OSError) as e:
            log.error("%s", _failure(e, "load"))
            report.results.append(StepResult(path.name, "-", "load", "failed", 0.0, _failure(e, "load")))
    return report


def summary_table(report: RunReport, *, all_rows: bool = False) -> str:
    """character, stage, step, status, time — the steps that ran or failed (all rows with `all_rows`); one line
    when nothing ran. Rows name whose step it is (a group file's rows name the member or the group)."""
    rows = [r for r in report.results if all_rows or r.status not in ("up to date", "skipped")]
    if not rows:
        n = len({r.target for r in report.results})
        names = ", ".join(dict.fromkeys(r.owner or r.target for r in report.results))
        steps = sum(r.status == "up to date" for r in report.results)
        return f"nothing to do: {n} target(s) up to date ({names}: {steps} steps)"
    head = ("character", "stage", "step", "status", "time")
    body = [(r.owner or r.target, r.stage, r.step, r.status, f"{r.seconds:.1f}s") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
    fmt = lambda row: "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body]
    lines += [f"  {r.owner or r.target} {r.stage} {r.step}: {r.message}" for r in rows if r.message]
    return "\n".join(lines)
