"""Plan and run the steps of characters and groups: exactly the steps whose record no longer matches.

Every step of a stage has one record (`util.manifest`, in `LoRAWork/<owner>/pipeline/steps.json`): the content of
its inputs and outputs and the digest of its parameters. A step runs when that record does not match what is on
disk now — a parameter changed, an input's content changed, a recorded output is missing or was changed (a
truncated LoRA) — or when it is forced. Staleness is decided by content *when the step is reached*, after the
steps before it have run: a caption rule that leaves a dataset's captions as they were does not retrain it, a
pick that chose the same candidates does not re-export. `plan_jobs` (the dry run) therefore says "decided after
<step>" for a step that reads what a stale step will rewrite.

`run_target` takes the run lock of every character involved and runs the plan; a failed step blocks exactly the
steps that read its outputs (a failed outfit does not stop its sibling outfits), and `rerun` goes on past a
target that fails. The record of a step is removed before it runs and written after it succeeded, so a run
killed mid-step redoes exactly that step. Before a new LoRA, merge or compression replaces a finished one, the
stage's set goes to its history (`pipeline.history`), once per run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from charframe.errors import CharframeError
from charframe.pipeline import history
from charframe.pipeline.filesets import FileSet, params_text
from charframe.pipeline.lock import run_lock
from charframe.pipeline.stages import StageJob, find_character_files, find_groups, target_jobs
from charframe.pipeline.steps import STEPS, RunContext, Step, resolve
from charframe.pipeline.targets import check_targets, project_of
from charframe.project import write_roots
from charframe.util.files import check_confined, confine_writes
from charframe.util.manifest import Manifest

log = logging.getLogger(__name__)
_BY_NAME = {s.name: s for s in STEPS}

RECORDS = "steps.json"


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
    reason: str | None          # why it must run; None = up to date (or, with `after`, not known yet)
    skipped: bool = False       # after until_step
    forced: bool = False        # --force, or at/after from_step
    after: str | None = None    # dry run: reads what the stale step `after` rewrites; decided when reached

    @property
    def record(self) -> str:
        return f"{self.job.name}.{self.step.name}"

    @property
    def may_run(self) -> bool:
        """Stale (or forced), or reading what a stale step before it rewrites: it runs unless that comes out the same."""
        return not self.skipped and bool(self.reason or self.after)

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        if self.reason:
            return "stale"
        return f"decided after {self.after}" if self.after else "up to date"


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


class Records:
    """The step records of the jobs of one run, one `Manifest` per owner (character or group), loaded once."""

    def __init__(self) -> None:
        self._open: dict[Path, Manifest] = {}

    def of(self, job: StageJob) -> Manifest:
        path = job.state_dir / RECORDS
        if path not in self._open:
            self._open[path] = Manifest.load(path, base=job.root)
        return self._open[path]

    def save(self) -> None:
        """Write the records whose stats were refreshed (files touched but unchanged are then not read again)."""
        for m in self._open.values():
            m.save()

    def paths(self, sets: Iterable[FileSet]) -> list[str]:
        return [p for fs in sets for p in fs.paths()]

    def stale_reason(self, job: StageJob, step: Step) -> str | None:
        """Why `step` of `job` must run now, or None when its record matches the files and settings on disk."""
        m = self.of(job)
        return m.set_status(f"{job.name}.{step.name}", outputs=self.paths(step.outputs(job)),
                            inputs=self.paths(step.inputs(job)), params=params_text(step.params(job), job.root),
                            protect_outputs=step.protect_outputs)


def _index(table: Sequence[Step], name: str | None, param: str) -> int | None:
    if name is None:
        return None
    names = [s.name for s in table]
    if name not in names:
        raise CharframeError(f"unknown step {name!r} for {{param}}; steps: {', '.join(names)}", param=param)
    return names.index(name)


def _range(table: Sequence[Step], options: Options) -> tuple[int | None, int | None]:
    first, last = _index(table, options.from_step, "from_step"), _index(table, options.until_step, "until_step")
    if first is not None and last is not None and first > last:
        raise CharframeError(f"{{param}} {options.from_step} comes after the last step to run ({options.until_step}): "
                             f"nothing would run; steps are {' → '.join(s.name for s in table)}", param="from_step")
    return first, last


def _forced(table: Sequence[Step], i: int, options: Options, first: int | None) -> str | None:
    if options.force:
        return "forced"
    if first is not None and i >= first:
        return "from " + table[first].name
    return None


def plan_jobs(jobs: Iterable[StageJob], options: Options = Options(), table: Sequence[Step] = STEPS,
              records: Records | None = None, pending: list[tuple[FileSet, str]] | None = None) -> list[PlannedStep]:
    """Every step of every job, in run order, with what is known before anything runs: stale (and why), up to
    date, skipped, or decided after an upstream step that will run (its inputs are that step's outputs).

    `from_step`: that step and every later one run even when up to date; earlier steps run only if stale (a step
    never trains on stale inputs). `until_step`: later steps are skipped. `pending`: outputs that earlier planned
    targets will rewrite (a dry run of many targets shares it)."""
    first, last = _range(table, options)
    records = records or Records()
    planned: list[PlannedStep] = []
    pending = [] if pending is None else pending
    for job in jobs:
        for i, step in enumerate(table):
            if job.stage not in step.stages:
                continue
            if last is not None and i > last:
                planned.append(PlannedStep(job, step, None, skipped=True))
                continue
            forced = _forced(table, i, options, first)
            p = PlannedStep(job, step, forced, forced=forced is not None)
            if not forced:
                inputs = step.inputs(job)
                p.after = next((label for fs, label in pending if any(fs.overlaps(i_) for i_ in inputs)), None)
                if p.after is None:
                    p.reason = records.stale_reason(job, step)
            if p.reason or p.after:
                pending += [(fs, f"{job.name} {step.name}") for fs in step.outputs(job)]
            planned.append(p)
    return planned


def _describe(fs: FileSet, root: Path) -> str:
    try:
        where = fs.root.relative_to(root)
    except ValueError:
        where = fs.root
    if not fs.patterns:
        return str(where)
    return f"{where}/{{{','.join(fs.patterns)}}} ({len(fs.files())} files)"


def describe_plan(planned: Sequence[PlannedStep], verbose: bool = True) -> str:
    """The dry-run text: per step whether it runs (and why), with its inputs and outputs when `verbose`."""
    lines = []
    for p in planned:
        head = f"{p.job.owner:<12} {p.job.name:<10} {p.step.name:<9} "
        if p.skipped:
            lines.append(head + "skipped")
            continue
        lines.append(head + (f"RUN ({p.reason})" if p.reason else p.status))
        if verbose:
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


class _Versions:
    """`keep_version` of a run: a stage's finished set goes to its history once per run, before it is replaced.
    `done` may be shared by the parts of one run that an executor runs one after another (`run_jobs`)."""

    def __init__(self, records: Records, done: set[tuple[Path, str]] | None = None) -> None:
        self.records = records
        self.done: set[tuple[Path, str]] = set() if done is None else done

    def __call__(self, job: StageJob) -> None:
        key = (job.state_dir, job.name)
        if key not in self.done:
            self.done.add(key)
            kept = history.archive(job, self.records.of(job))
            if kept is not None:
                log.info("%s: the previous version is kept in %s", job.lora.name, kept)


def run_planned(planned: Sequence[PlannedStep], target: str, options: Options = Options(),
                records: Records | None = None,
                on_step: Callable[[PlannedStep, StepResult], None] | None = None, *,
                broken: list[tuple[FileSet, str]] | None = None,
                archived: set[tuple[Path, str]] | None = None) -> RunReport:
    """Run the planned steps in order, each only if it is forced or stale *now* (see the module doc). A step that
    fails blocks the steps reading its outputs (and theirs, transitively); the others go on.

    `broken` (outputs of failed or blocked steps, with their labels) and `archived` (stages whose finished set
    went to the history) carry one run across parts run one after another, possibly in other processes (an
    executor's stage chain split at its GPU steps): both are updated in place."""
    records = records or Records()
    report = RunReport()
    ctx = RunContext(progress=options.progress, keep_version=_Versions(records, archived))
    broken = [] if broken is None else broken  # outputs of failed or blocked steps
    for p in planned:
        row = StepResult(target, p.job.name, p.step.name, "skipped" if p.skipped else "up to date", owner=p.job.owner)
        report.results.append(row)
        if p.skipped:
            continue
        inputs = p.step.inputs(p.job)
        cause = next((label for fs, label in broken if any(fs.overlaps(i) for i in inputs)), None)
        if cause is not None:
            row.status, row.message = "blocked", f"needs {cause}, which failed"
            broken += [(fs, f"{p.job.name} {p.step.name}") for fs in p.step.outputs(p.job)]
            continue
        reason = p.reason if p.forced else records.stale_reason(p.job, p.step)
        if reason is None:
            if on_step:
                on_step(p, row)
            continue
        log.info("%s %s: %s (%s)", p.job.owner, p.job.name, p.step.name, reason)
        row.status = "running"
        if on_step:
            on_step(p, row)
        _run_one(p, records, ctx, row)
        if row.status == "failed":
            log.error("%s %s %s: %s", p.job.owner, p.job.name, p.step.name, row.message)
            broken += [(fs, f"{p.job.name} {p.step.name}") for fs in p.step.outputs(p.job)]
        if on_step:
            on_step(p, row)
    return report


def _run_one(p: PlannedStep, records: Records, ctx: RunContext, row: StepResult) -> None:
    """Forget the step's record, fingerprint its inputs, run it, record inputs + outputs + parameters. A step that
    adds to earlier steps' outputs (`Step.refreshes`: pick's retries add candidates) re-records those steps and
    fingerprints its own inputs after it ran, so the files it added make nothing stale."""
    m = records.of(p.job)
    known = m.set_inputs(p.record)
    m.forget(p.record)
    m.save()
    start = time.perf_counter()
    try:
        params = params_text(p.step.params(p.job), p.job.root)
        inputs = m.fingerprints(records.paths(p.step.inputs(p.job)), known)
        p.step.run(resolve(p.step.call, p.step.name), p.job, ctx)
        if p.step.refreshes:
            _refresh(p, records)
            inputs = m.fingerprints(records.paths(p.step.inputs(p.job)), inputs)
        row.seconds = time.perf_counter() - start
        m.record_set(p.record, outputs=records.paths(p.step.outputs(p.job)), inputs=inputs, params=params,
                     seconds=row.seconds)
        m.save()
        row.status = "ran"
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one step is reported; the other targets go on
        if getattr(e, "exit_code", 0) == 130:
            raise  # Ctrl-C inside the trainer (state saved): stop the run, the step stays stale
        if not isinstance(e, (CharframeError, OSError)):
            log.debug("step %s failed", p.step.name, exc_info=True)
        row.seconds, row.status, row.message = time.perf_counter() - start, "failed", _failure(e, p.step.name)


def _refresh(p: PlannedStep, records: Records) -> None:
    """Re-record the earlier steps `p.step` added files to (their record then matches the files now). They are
    looked up among all steps: a part of a chain (an executor's) may lack those a step refreshes."""
    m, job = records.of(p.job), p.job
    for name in p.step.refreshes:
        other, record = _BY_NAME.get(name), f"{job.name}.{name}"
        entry = m.outputs.get(record)
        if other is None or not entry or "files" not in entry:
            continue
        inputs = m.fingerprints(records.paths(other.inputs(job)), m.set_inputs(record))
        m.record_set(record, outputs=records.paths(other.outputs(job)), inputs=inputs,
                     params=params_text(other.params(job), job.root), seconds=float(entry.get("seconds", 0.0)))


@contextlib.contextmanager
def _locks(jobs: Sequence[StageJob]):
    with contextlib.ExitStack() as stack:
        for owner, folder in sorted({(j.owner, j.state_dir) for j in jobs}):
            stack.enter_context(run_lock(folder, owner))
        yield


def run_target(path: str | os.PathLike, options: Options = Options(), table: Sequence[Step] = STEPS,
               dry_run: bool = False,
               on_step: Callable[[PlannedStep, StepResult], None] | None = None) -> tuple[list[PlannedStep], RunReport]:
    """Plan (and unless `dry_run`, run) one character or group file."""
    check_targets([path])  # no other file claims its folders
    jobs = target_jobs(Path(path), options.stage)
    if dry_run:
        return plan_jobs(jobs, options, table), RunReport()
    return run_jobs(path, jobs, options, table, on_step)


def run_jobs(path: str | os.PathLike, jobs: Sequence[StageJob], options: Options = Options(),
             table: Sequence[Step] = STEPS, on_step: Callable[[PlannedStep, StepResult], None] | None = None, *,
             positions: Iterable[int] | None = None, broken: list[tuple[FileSet, str]] | None = None,
             archived: set[tuple[Path, str]] | None = None) -> tuple[list[PlannedStep], RunReport]:
    """Run `jobs` of the target file `path` under their run locks, writes confined to its project.

    `positions`: only the steps at these places of the plan (`plan_jobs(jobs, options, table)`, the same on
    every machine for the same files) — how an executor runs a stage chain in parts (`pipeline.executors`);
    `broken`, `archived` carry the run between the parts (see `run_planned`)."""
    with confine_writes(write_roots(project_of(Path(path)))), _locks(jobs):
        for folder in _written_folders(jobs):  # a link leading out is refused before any step runs
            check_confined(folder)
        records = Records()
        planned = plan_jobs(jobs, options, table, records)
        if positions is not None:
            keep = set(positions)
            planned = [p for i, p in enumerate(planned) if i in keep]
        try:
            return planned, run_planned(planned, Path(path).name, options, records, on_step, broken=broken,
                                        archived=archived)
        finally:
            records.save()


def _written_folders(jobs: Sequence[StageJob]) -> list[Path]:
    """The folders the steps of `jobs` write into: work sets, datasets, LoRA folders, step records."""
    folders = {j.state_dir for j in jobs} | {j.dataset for j in jobs} | {j.lora.parent for j in jobs}
    folders |= {c.work_dir(s) for j in jobs for c, s in j.sets()}
    return sorted(folders)


def all_targets(root: Path) -> list[Path]:
    """Every character file, then every group file, of the project."""
    return find_character_files(root) + find_groups(root)


def target_stage(path: Path, options: Options) -> str:
    """Group files run their group stage only under `rerun` (their members are targets of their own)."""
    return "group" if path.name.endswith(".group.toml") and options.stage == "all" else options.stage


def rerun(targets: Sequence[Path], options: Options = Options(), table: Sequence[Step] = STEPS,
          on_step: Callable[[PlannedStep, StepResult], None] | None = None) -> RunReport:
    """Run the stale steps of each target; a target that fails (bad file, failing step, locked) is reported and
    the next one runs."""
    report = RunReport()
    check_targets(targets)  # before anything runs: no two files claim one folder
    for path in targets:
        try:
            opts = Options(target_stage(path, options), options.from_step, options.until_step, options.force,
                           options.progress)
            _, r = run_target(path, opts, table, on_step=on_step)
            report.results += r.results
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a target that cannot even start is reported; the next one runs
            if getattr(e, "exit_code", 0) == 130:
                raise
            if not isinstance(e, (CharframeError, OSError)):
                log.debug("%s", path, exc_info=True)
            log.error("%s", _failure(e, "load"))
            report.results.append(StepResult(path.name, "-", "load", "failed", 0.0, _failure(e, "load")))
    return report


def plan_targets(targets: Sequence[Path], options: Options = Options(), table: Sequence[Step] = STEPS
                 ) -> list[tuple[Path, list[PlannedStep] | str]]:
    """The dry run of many targets, in run order (a group's stage waits for what its members' stages will
    rewrite): each target's plan, or the one-line reason it cannot be planned."""
    out: list[tuple[Path, list[PlannedStep] | str]] = []
    records, pending = Records(), []
    for path in targets:
        opts = Options(target_stage(path, options), options.from_step, options.until_step, options.force)
        try:
            out.append((path, plan_jobs(target_jobs(path, opts.stage), opts, table, records, pending)))
        except (CharframeError, OSError) as e:
            out.append((path, _failure(e, "load")))
    return out


def describe_targets(plans: Sequence[tuple[Path, list[PlannedStep] | str]]) -> str:
    """The dry-run text of many targets: the steps that run or wait, then one line per target."""
    lines, totals = [], []
    for path, plan in plans:
        if isinstance(plan, str):
            totals.append(f"{path.name}: cannot be planned: {plan}")
            continue
        todo = [p for p in plan if p.may_run]
        if todo:
            lines.append(describe_plan(todo, verbose=False))
        waits = sum(1 for p in todo if not p.reason)
        totals.append(f"{path.name}: {len(todo)} step(s) to run" + (f" ({waits} decided when reached)" if waits else "")
                      if todo else f"{path.name}: up to date")
    return "\n".join(lines + totals)


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
