"""Where the jobs of `run` and `rerun` run: the executor seam.

- `local` (the default): this process, one target after another (`runner.rerun`, `runner.run_target`), as always;
- `ray`: the job graph (`pipeline.graph`) as Ray tasks — one per part of a stage chain, `gpus` GPUs for the GPU
  parts, CPU parts on CPU workers, the graph's order as object dependencies (`pipeline.executor_ray`);
- `slurm`: one submitit batch job per stage chain, a group's job `afterok` its members' (`pipeline.executor_slurm`);
- `inline`: the job graph run part by part in this process — what a cluster run does, without a cluster (tests
  and benchmarks compare it with the others).

Every executor gives a `RunReport` in the order of a local run: the summary table is the same whatever ran it.
The project folder must be on a file system every worker mounts at the same path (the steps read and write it,
and the run lock and step records there keep two workers off one character); a worker that does not see it
fails that node with the path, and the others go on. Ray and submitit are optional installs
(`charframe[ray]`, `charframe[slurm]`): asking for one that is missing is one line naming the extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from charframe.errors import CharframeError
from charframe.pipeline import executor_ray, executor_slurm
from charframe.pipeline.graph import Graph, Lost, Outcomes, PartResult, assemble, describe, plan_graph, run_part
from charframe.pipeline.runner import Options, PlannedStep, RunReport, StepResult, rerun, run_target
from charframe.pipeline.steps import STEPS, Step
from charframe.pipeline.targets import project_of
from charframe.project import EXECUTORS, ClusterTable, load_project

log = logging.getLogger(__name__)


def run_inline(graph: Graph, cluster: ClusterTable, address: str | None = None) -> Outcomes:
    """The graph in this process, node after node in run order (each node's dependencies come before it)."""
    outcomes: Outcomes = {}
    last: dict[str, PartResult] = {}
    table = None if graph.table is STEPS else graph.table
    for node in graph.nodes:
        upstream = [last.get(k) for k in node.carries]
        before: PartResult | None = None
        outs: list[PartResult | Lost] = []
        for part in node.parts:
            before = run_part(part, table, before, *upstream)
            log.info("%s", describe(before, part.label))
            outs.append(before)
        outcomes[node.key] = outs
        if before is not None:
            last[node.key] = before
    return outcomes


#: what each remote executor checks before anything is planned (its install, its cluster)
PRECHECKS: dict[str, Callable[[str | None], object]] = {
    "ray": executor_ray.precheck, "slurm": lambda address: executor_slurm.precheck(),
}
RUNNERS: dict[str, Callable[[Graph, ClusterTable, str | None], Outcomes]] = {
    "inline": run_inline, "ray": executor_ray.run_ray,
    "slurm": lambda graph, cluster, address: executor_slurm.run_slurm(graph, cluster),
}


def cluster_of(targets: Sequence[Path]) -> ClusterTable:
    """`[cluster]` of the targets' project (the defaults without targets)."""
    return load_project(project_of(Path(targets[0]))).cluster if targets else ClusterTable()


def execute(targets: Sequence[Path], options: Options = Options(), table: Sequence[Step] = STEPS, *,
            executor: str | None = None, address: str | None = None, whole_targets: bool = False,
            cluster: ClusterTable | None = None,
            on_step: Callable[[PlannedStep, StepResult], None] | None = None) -> RunReport:
    """Run the stale steps of `targets` on `executor` (None: `[cluster] executor` of the project, else local).

    `whole_targets`: each target runs every stage `options.stage` names, a group its members' too (`run`);
    otherwise a group file runs its group stage only (`rerun`, where the members are targets of their own).
    `address`: Ray's cluster (None: `[cluster] address`; "" starts a Ray instance on this machine).
    `on_step`: called after each step the local executor runs (progress lines); remote jobs report at the end."""
    cluster = cluster or cluster_of(targets)
    name = executor or cluster.executor
    if name not in RUNNERS and name != "local":
        raise CharframeError(f"unknown executor {name!r} for {{param}}; use {', '.join(EXECUTORS)}", param="executor")
    where = cluster.address if address is None else address
    if name in PRECHECKS:
        PRECHECKS[name](where)  # a missing install, an unreachable cluster: one line, before anything is planned
    if name == "local":
        if whole_targets:
            reports = [run_target(t, options, table, on_step=on_step)[1] for t in targets]
            return RunReport([r for rep in reports for r in rep.results])
        return rerun(targets, options, table, on_step=on_step)
    remote = Options(options.stage, options.from_step, options.until_step, options.force, progress=False)
    graph = plan_graph(targets, remote, table, per_target_stage=not whole_targets, strict=whole_targets)
    sent = sum(len(n.parts) for n in graph.nodes)
    log.info("%d target(s): %d stage chain(s), %d with work to send as %d job(s) to %s", len(targets),
             len(graph.nodes), sum(1 for n in graph.nodes if n.todo), sent, name)
    outcomes = RUNNERS[name](graph, cluster, where) if sent else {}
    return assemble(graph, outcomes)
