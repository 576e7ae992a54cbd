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
from typing import Iterable, Sequence

from charframe.errors import CharframeError
from charframe.pipeline import manifest as mf
from charframe.pipeline.lock import run_lock
from charframe.pipeline.stages import StageJob, find_character_files, find_groups, target_jobs
from charframe.pipeline.steps import STEPS, RunContext, Step, resolve
from charframe.pipeline.targets import check_targets, project_of
from charframe.project import write_roots
from charframe.util.files import confine_writes

log = logging.getLogger(__name__)


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
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"unexpected {type(e).__name__}: {first} (run with -v for the traceback)"


def run_planned(planned: Sequence[PlannedStep], target: str, options: Options = Options()) -> RunReport:
    """Run the stale steps in order; after a failure the remaining stale steps of the target are blocked."""
    report = RunReport()
    ctx = RunContext(progress=options.progress)
    failed = False
    for p in planned:
        row = StepResult(target, p.job.name, p.step.name, p.status if p.reason is None else "stale")
        report.results.append(row)
        if p.reason is None:
            continue
        if failed:
            row.status = "blocked"
            continue
        log.info("%s %s: %s (%s)", p.job.owner, p.job.name, p.step.name, p.reason)
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
        except Exception as e:  # noqa: BLE001 - any step failure is that step's; the other targets still run
            if getattr(e, "exit_code", 0) == 130:
                raise  # Ctrl-C inside the trainer (state saved): stop the run, the step stays stale
            if not isinstance(e, (CharframeError, OSError)):
                log.debug("%s %s %s", p.job.owner, p.job.name, p.step.name, exc_info=True)
            row.seconds, row.status, row.message = time.perf_counter() - start, "failed", _failure(e, p.step.name)
            log.error("%s %s %s: %s", p.job.owner, p.job.name, p.step.name, row.message)
            failed = True
    return report


@contextlib.contextmanager
def _locks(jobs: Sequence[StageJob]):
    with contextlib.ExitStack() as stack:
        for owner, folder in sorted({(j.owner, j.state_dir) for j in jobs}):
            stack.enter_context(run_lock(folder, owner))
        yield


def run_target(path: str | os.PathLike, options: Options = Options(), table: Sequence[Step] = STEPS,
               dry_run: bool = False) -> tuple[list[PlannedStep], RunReport]:
    """Plan (and unless `dry_run`, run) one character or group file."""
    check_targets([path])  # no other file claims its folders
    jobs = target_jobs(Path(path), options.stage)
    if dry_run:
        return plan_jobs(jobs, options, table), RunReport()
    with confine_writes(write_roots(project_of(Path(path)))), _locks(jobs):
        planned = plan_jobs(jobs, options, table)
        return planned, run_planned(planned, Path(path).name, options)


def all_targets(root: Path) -> list[Path]:
    """Every character file, then every group file, of the project."""
    return find_character_files(root) + find_groups(root)


def rerun(targets: Sequence[Path], options: Options = Options(), table: Sequence[Step] = STEPS) -> RunReport:
    """Run the stale steps of each target; a target that fails (bad file, failing step, locked) is reported and
    the next one runs. Group files run their group stage only (their members are targets of their own)."""
    report = RunReport()
    check_targets(targets)  # before anything runs: no two files claim one folder
    for path in targets:
        stage = "group" if path.name.endswith(".group.toml") and options.stage == "all" else options.stage
        try:
            _, r = run_target(path, Options(stage, options.from_step, options.until_step, options.force, options.progress), table)
            report.results += r.results
        except Exception as e:  # noqa: BLE001 - a target that cannot even start is reported; the next one runs
            if not isinstance(e, (CharframeError, OSError)):
                log.debug("%s", path, exc_info=True)
            log.error("%s", _failure(e, "load"))
            report.results.append(StepResult(path.name, "-", "load", "failed", 0.0, _failure(e, "load")))
    return report


def summary_table(report: RunReport, *, all_rows: bool = False) -> str:
    """character, stage, step, status, time — the steps that ran or failed (all rows with `all_rows`)."""
    rows = [r for r in report.results if all_rows or r.status not in ("up to date", "skipped")]
    if not rows:
        n = len({r.target for r in report.results})
        return f"nothing to do: {n} target(s) up to date"
    head = ("character", "stage", "step", "status", "time")
    body = [(r.target, r.stage, r.step, r.status, f"{r.seconds:.1f}s") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
    fmt = lambda row: "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body]
    lines += [f"  {r.target} {r.stage} {r.step}: {r.message}" for r in rows if r.message]
    return "\n".join(lines)
