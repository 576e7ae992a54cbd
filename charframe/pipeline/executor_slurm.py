"""The `slurm` executor: one batch job per stage chain through submitit, a group's job after its members'.

A chain's parts run in one job (`graph.run_part_to_file`): Slurm allocates the GPU for the job anyway, and a
chain without a GPU step to run asks for none. A job that waits for others carries `--dependency=afterok:…`
with `--kill-on-invalid-dep=yes`, so a group whose member's job died is cancelled instead of pending forever.
A failing *step* does not fail its job (the job exits 0 and reports the step), so a group still runs after a
member with a failed outfit, exactly as a local `rerun` does; what a member's failure blocks in a group run
from one group file travels through the result files the jobs write beside their logs.

Partition, GPUs, CPUs, time, memory, account and set-up lines come from `[cluster]` of charframe.toml
(`slurm_parameters`); job scripts, logs and results go to `[cluster] logs`/<run stamp>/ on the shared file
system. The driver submits, then waits and prints the summary table (keep it running, e.g. in tmux, on the
login node). submitit's local executor (`local=True`: subprocesses of this machine, no dependencies, so jobs
start in waves as their dependencies finish) runs the same jobs without Slurm, for tests.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from charframe.errors import CharframeError
from charframe.pipeline.extras import need
from charframe.pipeline.graph import (
    Graph, Lost, Node, Outcomes, Part, PartResult, describe, run_part_to_file, safe_key,
)
from charframe.pipeline.steps import STEPS
from charframe.pipeline.targets import project_of
from charframe.project import ClusterTable
from charframe.util.files import new_stamped_folder

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def slurm_parameters(cluster: ClusterTable, name: str, gpu: bool, after: Sequence[str] = ()) -> dict[str, Any]:
    """submitit's `SlurmExecutor` parameters of one job (the `#SBATCH` lines it writes), from `[cluster]`."""
    params: dict[str, Any] = {"job_name": name, "time": cluster.minutes, "nodes": 1, "ntasks_per_node": 1,
                              "cpus_per_task": cluster.cpus}
    if gpu and cluster.gpus:
        params["gpus_per_node"] = cluster.gpus
    for key, value in (("partition", cluster.partition), ("account", cluster.account)):
        if value:
            params[key] = value
    if cluster.mem_gb:
        params["mem"] = f"{cluster.mem_gb}GB"
    if cluster.setup:
        params["setup"] = list(cluster.setup)
    if after:
        params["dependency"] = "afterok:" + ":".join(after)
        params["additional_parameters"] = {"kill-on-invalid-dep": "yes"}
    return params


def whole(node: Node, threads: int = 0) -> Part:
    """The node as one part (the places of all its parts, in order), computing with `threads` CPU threads."""
    first = node.parts[0]
    positions = tuple(sorted({i for p in node.parts for i in p.positions}))
    return Part(first.key, first.target, first.options, first.jobs, positions, any(p.gpu for p in node.parts),
                node.key, first.carries, threads)


def run_folder(graph: Graph, cluster: ClusterTable) -> Path:
    """`[cluster] logs`/<stamp>/ of the project: submitit's scripts, logs and pickles, and the result files."""
    folder = new_stamped_folder(project_of(graph.targets[0]) / cluster.logs)
    (folder / "results").mkdir()
    return folder


def precheck(local: bool = False) -> Any:
    """Before anything is planned: submitit is installed and (unless `local`) Slurm's sbatch is at hand."""
    submitit = need("slurm")
    if not local and shutil.which("sbatch") is None:
        raise CharframeError("the slurm executor needs Slurm's sbatch, which is not on this machine's PATH; run "
                             "on a login node of the cluster")
    return submitit


def run_slurm(graph: Graph, cluster: ClusterTable, *, local: bool = False) -> Outcomes:
    """Submit one job per node with work, wait for all, and give each node's outcome."""
    submitit = precheck(local)
    folder = run_folder(graph, cluster)
    table = None if graph.table is STEPS else tuple(graph.table)
    todo = [n for n in graph.nodes if n.parts]
    jobs: dict[str, Any] = {}
    lost: dict[str, Lost] = {}
    if local:
        executor = submitit.LocalExecutor(folder)
    else:
        executor = submitit.SlurmExecutor(folder)
    waiting = list(todo)
    sent = {n.key for n in todo}  # nodes with nothing to run are no one's dependency
    while waiting or any(not j.done() for j in jobs.values()):
        for node in list(waiting):
            deps = [k for k in node.deps if k in sent]
            if local and not all(k in lost or (k in jobs and jobs[k].done()) for k in deps):
                continue  # the local executor knows no dependencies: start when they have finished
            waiting.remove(node)
            dead = next((k for k in deps if k in lost or (local and _failed(jobs[k]))), None)
            if dead is not None:
                lost[node.key] = Lost("", upstream=dead.split(":", 1)[-1])
                continue
            part = whole(node, cluster.cpus)
            if local:
                executor.update_parameters(timeout_min=cluster.minutes, gpus_per_node=0, name=node.key)
            else:
                executor.update_parameters(**slurm_parameters(cluster, _job_name(node), part.gpu,
                                                              [str(jobs[k].job_id) for k in deps]))
            jobs[node.key] = executor.submit(run_part_to_file, part, table, str(folder / "results"), node.carries)
            log.info("%s: submitted as job %s", node.key, jobs[node.key].job_id)
        time.sleep(POLL_SECONDS)
    outcomes: Outcomes = {}
    for node in todo:
        if node.key in lost:
            outcomes[node.key] = [lost[node.key]] * len(node.parts)
            continue
        try:
            result: PartResult = jobs[node.key].result()
            log.info("%s", describe(result, node.key))
            outcomes[node.key] = [_split(result, node, i) for i in range(len(node.parts))]
        except Exception as e:  # noqa: BLE001 - the job died, was cancelled or timed out
            first = [ln for ln in str(e).strip().splitlines() if ln.strip()][:1] or [type(e).__name__]
            why = Lost(f"job {jobs[node.key].job_id} ended without a result ({first[0][:160]}); see its log in {folder}")
            outcomes[node.key] = [why] * len(node.parts)
    return outcomes


def _failed(job: Any) -> bool:
    return job.done() and job.exception() is not None


def _job_name(node: Node) -> str:
    return "charframe-" + safe_key(node.key)


def _split(result: PartResult, node: Node, i: int) -> PartResult:
    """The share of part `i` of the node in the result of the whole node (rows by place in the plan)."""
    if result.error is not None:
        return result
    whole_positions = sorted({p for part in node.parts for p in part.positions})
    by_place = dict(zip(whole_positions, result.rows))
    part = node.parts[i]
    return PartResult(result.key, [by_place[p] for p in part.positions], result.broken, result.archived, None,
                      result.host, result.seconds if i == 0 else 0.0)
