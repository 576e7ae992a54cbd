"""The job graph of a run of many characters and groups, and the one function a worker runs: `run_part`.

A run is cut into nodes: one owner's chain of stages within one target (a character's face stage, then its body
stages; a group's stage), since the stages of one owner share its step records and run lock and so run one
after another. A node comes after the earlier nodes it writes for or reads from: a group's stage after its
members' stages, two nodes of one owner in target order. Everything else may run at once.

The driver plans every node here (`plan_graph`: records and file stats only, the same plan as a dry run); a node
with nothing to run never leaves this process. A node's steps are cut into *parts* where the resource changes — GPU
steps (`gpu_steps` of charframe/data/executors.toml: generate, pick, train, score, preview) and CPU steps — and
only the parts holding a step that may run are sent. A worker runs a part with `run_part`: the same
`runner.run_jobs` a local run uses, restricted to the part's places in the plan, so staleness is still decided by
content when a step is reached, the run lock and the step records work as locally, and a failed step blocks exactly
the steps that read its outputs: the outputs of failed steps (`broken`) and the stages already archived travel from
part to part, and from a target's member nodes to its group node (as in one local `run` of a group file; across
targets, as in a local `rerun`, they do not).

`assemble` puts the rows back in the order of a local run, so the summary table is the same for every executor.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from charframe.errors import CharframeError
from charframe.pipeline.filesets import FileSet
from charframe.pipeline.runner import (
    Options, PlannedStep, Records, RunReport, StepResult, _failure, plan_jobs, run_jobs, target_stage,
)
from charframe.pipeline.stages import StageJob, target_jobs
from charframe.pipeline.steps import STEPS, Step
from charframe.pipeline.targets import check_targets, project_of
from charframe.pipeline.extras import EXECUTORS_FILE
from charframe.util import toml as tomlio
from charframe.util.files import atomic_write_text


def gpu_steps() -> frozenset[str]:
    """The steps that use the GPU (charframe/data/executors.toml)."""
    return frozenset(tomlio.load(EXECUTORS_FILE)["gpu_steps"])


@dataclass(frozen=True)
class Part:
    """One part of a node as a worker gets it: plain data (paths as text), the same on every machine."""

    key: str                      # the node's key
    target: str                   # the character or group file
    options: Options              # with the target's stage
    jobs: tuple[int, ...]         # places of the node's stages in target_jobs(target, stage)
    positions: tuple[int, ...]    # places of the part's steps in the node's plan
    gpu: bool
    label: str                    # "krnk face generate … body-sf preview"
    carries: tuple[str, ...] = ()  # keys of the nodes whose failures block steps here (same target)
    threads: int = 0              # torch's CPU threads while it runs: the CPUs its task was given (0: as they are)


@dataclass
class PartResult:
    """What a part did: its rows, the outputs of its failed or blocked steps, the stages it archived; or the one
    line why it could not start (`error`, the local run's "load" row)."""

    key: str
    rows: list[StepResult] = field(default_factory=list)
    broken: list[tuple[FileSet, str]] = field(default_factory=list)
    archived: set[tuple[Path, str]] = field(default_factory=set)
    error: str | None = None
    host: str = ""
    seconds: float = 0.0          # on the worker, from the call to the return

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "rows": [asdict(r) for r in self.rows],
                           "broken": [[str(fs.root), list(fs.patterns), label] for fs, label in self.broken],
                           "archived": [[str(p), n] for p, n in sorted(self.archived)], "error": self.error,
                           "host": self.host, "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> "PartResult":
        d = json.loads(text)
        return cls(d["key"], [StepResult(**r) for r in d["rows"]],
                   [(FileSet(Path(root), tuple(pats)), label) for root, pats, label in d["broken"]],
                   {(Path(p), n) for p, n in d["archived"]}, d["error"], d["host"], d["seconds"])


@dataclass
class Node:
    """One owner's stages within one target, planned by the driver."""

    key: str
    target: Path
    options: Options
    jobs: tuple[int, ...]
    writes: frozenset[str]        # owners whose records and outputs it writes
    reads: frozenset[str]         # owners whose outputs it reads (a group's members)
    planned: list[PlannedStep]
    job_of: list[int]             # per planned step, the place of its stage in target_jobs
    deps: tuple[str, ...] = ()
    carries: tuple[str, ...] = ()
    parts: list[Part] = field(default_factory=list)

    @property
    def todo(self) -> bool:
        return bool(self.parts)


@dataclass
class Graph:
    """The nodes in run order, and the targets that could not be planned (their local "load" rows)."""

    targets: list[Path]
    nodes: list[Node]
    unloadable: dict[Path, StepResult]
    table: Sequence[Step] = STEPS

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)


def _cut(node: Node, gpu: frozenset[str]) -> list[Part]:
    """The node's steps cut where the resource changes; the parts with a step that may run."""
    runs: list[list[int]] = []
    for i, p in enumerate(node.planned):
        on_gpu = p.step.name in gpu
        if runs and (node.planned[runs[-1][0]].step.name in gpu) == on_gpu:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = []
    for run in runs:
        if not any(node.planned[i].may_run for i in run):
            continue
        first, last = node.planned[run[0]], node.planned[run[-1]]
        label = f"{node.key} {first.job.name} {first.step.name}" + (
            f" … {last.job.name} {last.step.name}" if len(run) > 1 else "")
        parts.append(Part(node.key, str(node.target), node.options, node.jobs, tuple(run),
                          first.step.name in gpu, label, node.carries))
    return parts


def _nodes_of(path: Path, options: Options, jobs: list[StageJob], table: Sequence[Step], records: Records,
              pending: list) -> list[Node]:
    owners: dict[str, list[int]] = {}
    for i, j in enumerate(jobs):
        owners.setdefault(j.owner, []).append(i)
    nodes = []
    for owner, idx in owners.items():
        mine = [jobs[i] for i in idx]
        planned = plan_jobs(mine, options, table, records, pending)
        job_of = [i for i, j in zip(idx, mine) for s in table if j.stage in s.stages]
        reads = frozenset(c.keyword for j in mine if j.stage == "group" for c, _ in j.members)
        nodes.append(Node(f"{path.name}:{owner}", path, options, tuple(idx), frozenset({owner}), reads - {owner},
                          planned, job_of))
    return nodes


def plan_graph(targets: Sequence[Path], options: Options = Options(), table: Sequence[Step] = STEPS, *,
               per_target_stage: bool = True, strict: bool = False) -> Graph:
    """Plan every target (in order; `rerun`'s stage rule when `per_target_stage`, else `options.stage` as `run`
    does) into nodes with their dependencies and parts. No two files may claim one folder (checked first). A
    target that cannot be planned is a "load" row, as in a local `rerun`; with `strict` its error is raised (`run`)."""
    check_targets(targets)
    gpu = gpu_steps()
    records, pending = Records(), []
    nodes: list[Node] = []
    unloadable: dict[Path, StepResult] = {}
    for path in targets:
        stage = target_stage(path, options) if per_target_stage else options.stage
        opts = replace(options, stage=stage)
        try:
            jobs = target_jobs(path, stage)
            mine = _nodes_of(path, opts, jobs, table, records, pending)
        except (CharframeError, OSError) as e:
            if strict:
                raise
            unloadable[path] = StepResult(path.name, "-", "load", "failed", 0.0, _failure(e, "load"))
            continue
        for k, node in enumerate(mine):
            while any(m.key == node.key for m in nodes):  # a target named twice runs twice, as locally
                node.key += "+"
            earlier = nodes + mine[:k]
            node.deps = tuple(m.key for m in earlier
                              if m.writes & (node.writes | node.reads) or node.writes & m.reads)
            if node.reads:  # a group stage: after its members' nodes of this target, whose failures it inherits
                node.carries = tuple(m.key for m in mine if m is not node)
                node.deps = tuple(dict.fromkeys(node.deps + node.carries))
            node.parts = _cut(node, gpu)
        nodes += mine
    return Graph(list(targets), nodes, unloadable, table)


# --- on the worker -----------------------------------------------------------------------------------------

def run_part(part: Part, table: Sequence[Step] | None = None, before: PartResult | None = None,
             *upstream: PartResult | None) -> PartResult:
    """Run one part where this process runs (a Ray worker, a Slurm job, the driver itself). `before`: the result
    of the node's previous part; `upstream`: results of the nodes it waits for (those in `part.carries` pass on
    their failures). A problem that stops the part before any step (the project not visible here, a held lock,
    a file that no longer reads) is its `error`, as the local run's "load" row; a failing step is a row."""
    start = time.perf_counter()
    result = PartResult(part.key, host=socket.gethostname())
    if before is not None:
        if before.error is not None:
            return before  # the node stopped at an earlier part
        result.broken, result.archived = list(before.broken), set(before.archived)
    else:
        result.broken = [b for u in upstream if u is not None and u.key in part.carries for b in u.broken]
    try:
        if part.threads:
            _pin_threads(part.threads)
        path = Path(part.target)
        if not path.is_file():
            raise CharframeError(f"{path}: not found on {result.host}; the project folder must be on a file system "
                                 f"every worker mounts at the same path ({project_of(path)})")
        jobs = target_jobs(path, part.options.stage)
        mine = [jobs[i] for i in part.jobs]
        _, report = run_jobs(path, mine, part.options, STEPS if table is None else table,
                             positions=part.positions, broken=result.broken, archived=result.archived)
        result.rows = report.results
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - the part could not start: one line, the other nodes go on
        if getattr(e, "exit_code", 0) == 130:
            raise
        result.error = _failure(e, "load")
    result.seconds = time.perf_counter() - start
    return result


def _pin_threads(n: int) -> None:
    """Compute with the CPUs the task was given: a reused worker may have been left with another count, and the
    count changes the last bits of CPU results (the files of a part would depend on what ran before it)."""
    import torch

    torch.set_num_threads(n)


def run_part_to_file(part: Part, table: Sequence[Step] | None, results: str, carried: Sequence[str]) -> PartResult:
    """A whole node as one batch job (Slurm): read the results of the nodes it carries failures from (files in
    `results`, written by their jobs), run, and leave its own result there for the nodes after it."""
    upstream = []
    for key in carried:
        file = Path(results) / result_name(key)
        upstream.append(PartResult.from_json(file.read_text(encoding="utf-8")) if file.is_file() else None)
    result = run_part(part, table, None, *upstream)
    atomic_write_text(Path(results) / result_name(part.key), result.to_json())
    return result


def safe_key(key: str) -> str:
    """A node's key with path-unsafe characters replaced (a file or job name)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)


def result_name(key: str) -> str:
    """The file name of a node's result."""
    return safe_key(key) + ".json"


# --- back on the driver ------------------------------------------------------------------------------------

@dataclass
class Lost:
    """A part whose worker died (killed, out of memory, node lost) or whose node waited for one that did."""

    why: str                      # "WorkerCrashedError: the worker running it died"
    upstream: str | None = None   # the node it waited for, when that one was lost


def node_rows(node: Node, outcomes: Sequence[PartResult | Lost]) -> list[StepResult] | StepResult:
    """The node's rows in plan order: what its parts report, the planned status of the steps no part ran; or its
    one "load" row when a part could not start. A lost part: its steps that are up to date now are reported so,
    the first that is not failed (the worker died in it), the rest of the node blocked."""
    rows: list[StepResult | None] = [StepResult(node.target.name, p.job.name, p.step.name,
                                                "skipped" if p.skipped else "up to date") for p in node.planned]
    cause: str | None = None  # what the rest of the node needs, once a part was lost
    for part, outcome in zip(node.parts, outcomes):
        if isinstance(outcome, PartResult):
            if outcome.error is not None:
                return StepResult(node.target.name, "-", "load", "failed", outcome.seconds, outcome.error)
            for pos, row in zip(part.positions, outcome.rows):
                rows[pos] = row
        elif cause is None:
            cause = _lost_rows(node, part, outcome, rows)
        else:
            for pos in part.positions:
                if node.planned[pos].may_run:
                    rows[pos] = replace(rows[pos], status="blocked", message=f"needs {cause}, whose worker died")
    return [r for r in rows if r is not None]


def _lost_rows(node: Node, part: Part, lost: Lost, rows: list) -> str:
    """Rows of the part whose worker died (or that waited for a lost node); returns what the rest needs."""
    records = Records()
    cause = lost.upstream
    for pos in part.positions:
        p = node.planned[pos]
        if not p.may_run:
            continue
        if cause is None and records.stale_reason(p.job, p.step) is not None:  # the step it died in
            cause = f"{p.job.name} {p.step.name}"
            rows[pos] = replace(rows[pos], status="failed", message=f"{lost.why}; rerun to finish it: finished "
                                "steps are kept")
        elif cause is not None:
            rows[pos] = replace(rows[pos], status="blocked", message=f"needs {cause}, whose worker died")
    return cause or part.label


def describe(result: PartResult, label: str) -> str:
    """One progress line for a finished part."""
    if result.error:
        return f"{label}: could not start on {result.host}: {result.error}"
    ran = [r for r in result.rows if r.status == "ran"]
    bad = [r for r in result.rows if r.status in ("failed", "blocked")]
    what = f"{len(ran)} ran" + (f", {len(bad)} failed or blocked" if bad else "")
    return f"{label}: {what} on {result.host} ({result.seconds:.1f} s)"


#: the outcome of each node's parts, by node key: what `assemble` turns into the report
Outcomes = dict[str, list["PartResult | Lost"]]


def assemble(graph: Graph, outcomes: Outcomes) -> RunReport:
    """Every row in the order a local run writes them: per target in order, its stages in order, each stage's
    steps in order; a target that could not be planned, or one of whose nodes could not start, as a "load" row."""
    report = RunReport()
    for path in graph.targets:
        if path in graph.unloadable:
            report.results.append(graph.unloadable[path])
            continue
        placed: list[tuple[int, int, int, StepResult]] = []
        load_rows: list[StepResult] = []
        for n, node in enumerate(x for x in graph.nodes if x.target == path):
            rows = node_rows(node, outcomes.get(node.key, []))
            if isinstance(rows, StepResult):
                load_rows.append(rows)
                continue
            placed += [(job, n, i, row) for i, (job, row) in enumerate(zip(node.job_of, rows))]
        report.results += load_rows + [row for *_, row in sorted(placed, key=lambda t: t[:3])]
    return report
