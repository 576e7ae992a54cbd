"""The `ray` executor: the job graph (`pipeline.graph`) as Ray tasks.

Each part of a stage chain is one task running `graph.run_part`: a GPU part (generate, pick, train, score, preview)
asks for `[cluster] gpus` GPUs and one CPU, a CPU part (clean, export, prepare, merge, compress) for `[cluster]
cpus` CPUs and no GPU, so a GPU is free while a set is cleaned or a LoRA compressed. A part takes the previous part
of its chain as an argument and the first part of a chain the last parts of the chains it waits for (a group's
members): Ray's object dependencies are the graph's order, and no task starts before its inputs are written.

Tasks are not retried (`max_retries=0`): a worker that dies (killed, out of memory, its node lost) fails its
chain and blocks what waits for it; the other chains go on, and a rerun finishes it from the step it died in.
A cluster without GPUs runs the GPU parts on CPU workers (said once). Resource requests are capped at the
largest node, so that no task waits for a node that cannot exist.

`address`: "" or None starts a Ray instance on this machine (one machine with several GPUs); "auto" joins the
cluster this machine is part of; "ray://head:10001" reaches one through Ray Client. Every node needs
charframe and its models installed and the project folder mounted at the same path.
"""

from __future__ import annotations

import logging
import signal
import socket
from dataclasses import replace
from typing import Any

from charframe.errors import CharframeError
from charframe.pipeline.extras import need
from charframe.pipeline.graph import Graph, Lost, Outcomes, PartResult, describe, run_part
from charframe.pipeline.steps import STEPS
from charframe.project import ClusterTable

log = logging.getLogger(__name__)

#: Ray's errors that mean the process running the task is gone (not an exception raised by charframe)
DIED = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ActorDiedError", "ObjectLostError",
        "OwnerDiedError", "TaskCancelledError", "LocalRayletDiedError")


#: seconds to wait for a cluster's port to answer before saying it cannot be reached (Ray itself retries for minutes)
CONNECT_SECONDS = 5.0


def _unreachable(address: str) -> str | None:
    """Why `address` ("host:port", "ray://host:port") does not answer a TCP connection now; None when it does or
    when it names no port ("auto": Ray looks for the cluster of this machine itself)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        return e.strerror or type(e).__name__.replace("Error", "").lower() or "no answer"
    return None


FIX = "start it (`ray start --head` on the head node) or give its address as {param} (auto, or ray://HOST:10001)"


def precheck(address: str | None) -> None:
    """Before anything is planned: Ray is installed and a cluster address answers (each one line otherwise)."""
    ray = need("ray")
    why = _unreachable(address) if address and not ray.is_initialized() else None
    if why is not None:
        raise CharframeError(f"cannot reach the Ray cluster at {address}: {why}; {FIX}", param="address")


def connect(ray: Any, address: str | None) -> bool:
    """Join (or start) Ray; True when this call started it (and so must shut it down). Unreachable → one line."""
    if ray.is_initialized():
        return False
    precheck(address)
    try:
        ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=True, configure_logging=False)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
        where = address or "this machine"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CharframeError(f"cannot reach the Ray cluster at {where}: {first}; {FIX}", param="address") from None
    return True


def _limits(ray: Any) -> tuple[float, float]:
    """(GPUs, CPUs) of the largest live node."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    return (max((n.get("GPU", 0) for n in nodes), default=0), max((n.get("CPU", 1) for n in nodes), default=1))


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


def _lost(e: BaseException) -> Lost:
    kind = type(e).__name__
    if any(k in kind for k in DIED):
        return Lost(f"{kind}: the worker running it died")
    return Lost(f"{kind} on the worker: {_first_line(e)}")


def run_ray(graph: Graph, cluster: ClusterTable, address: str | None = None) -> Outcomes:
    """Submit every part of the graph as a Ray task, wait for all, and give each node's outcomes."""
    ray = need("ray")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = connect(ray, address)
    try:
        max_gpu, max_cpu = _limits(ray)
        if max_gpu == 0 and any(p.gpu for n in graph.nodes for p in n.parts):
            log.warning("the Ray cluster has no GPU: the GPU steps run on CPU workers")
        gpus, cpus = min(cluster.gpus, max_gpu), max(1, min(cluster.cpus, max_cpu))
        task = ray.remote(run_part)
        table = None if graph.table is STEPS else ray.put(tuple(graph.table))
        refs: dict[str, list[Any]] = {}
        labels: dict[Any, str] = {}
        for node in graph.nodes:
            waits = [refs[k][-1] for k in node.deps if refs.get(k)]
            before = None
            for i, part in enumerate(node.parts):
                opts = dict(num_gpus=gpus, num_cpus=1) if part.gpu else dict(num_gpus=0, num_cpus=cpus)
                part = replace(part, threads=opts["num_cpus"])
                args = (part, table, before) + (tuple(waits) if i == 0 else ())
                before = task.options(max_retries=0, name=part.label[:100], **opts).remote(*args)
                refs.setdefault(node.key, []).append(before)
                labels[before] = part.label
        _wait(ray, labels)
        return _outcomes(ray, graph, refs)
    finally:
        if started:
            ray.shutdown()
            for sig, handler in handlers.items():  # ray.init installs its own; training's Ctrl-C/SIGTERM save needs ours
                signal.signal(sig, handler)


def _wait(ray: Any, labels: dict[Any, str]) -> None:
    """Wait for every task, saying each one as it finishes."""
    remaining = list(labels)
    while remaining:
        done, remaining = ray.wait(remaining, num_returns=1)
        for ref in done:
            try:
                log.info("%s", describe(ray.get(ref), labels[ref]))
            except Exception as e:  # noqa: BLE001 - reported with the node's outcomes
                log.warning("%s: %s", labels[ref], _lost(e).why)


def _outcomes(ray: Any, graph: Graph, refs: dict[str, list[Any]]) -> Outcomes:
    """Each node's part results; a part whose worker died (or that waited for a lost node) as `Lost`."""
    outcomes: Outcomes = {}
    lost: set[str] = set()
    for node in graph.nodes:
        upstream = next((k for k in node.deps if k in lost), None)
        outs: list[PartResult | Lost] = []
        for i, ref in enumerate(refs.get(node.key, [])):
            try:
                outs.append(ray.get(ref))
            except Exception as e:  # noqa: BLE001 - Ray's task and worker errors
                if outs and isinstance(outs[-1], Lost):
                    outs.append(outs[-1])
                elif i == 0 and upstream is not None:
                    outs.append(Lost("", upstream=upstream.split(":", 1)[-1]))
                else:
                    outs.append(_lost(e))
                lost.add(node.key)
        outcomes[node.key] = outs
    return outcomes
