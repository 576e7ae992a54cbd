"""`python benchmarks/rerun.py --executor ray`: what an executor adds per job, on the tiny models; and the
estimate of 50 characters on 8 GPUs from per-step times (`--estimate`).

Set-up (not timed): N tiny characters (one outfit each: a face and a body stage; 64 px, one sampling step, one
training step) made once by the real steps, locally. Timed: every stage's merge → compress → preview, forced
(`--from merge`, real steps on the tiny models), run by
- local: `rerun` in this process (the reference: no executor);
- the executor (`ray`: a Ray instance on this machine with ONE CPU, so its jobs run one after another): each job
  measures its own time inside `run_part`; wall time − those times = what the executor adds (planning the graph,
  shipping the job, scheduling, starting or reusing a worker, returning the result), per job. Run twice: cold
  (the workers start and import torch and diffusers) and warm (a later `rerun` on a running cluster).
Target (issue 23): ≤ 0.5 s per job, warm.

The estimate simulates the job graph (per character: face then body, each cut into GPU and CPU parts as the ray
executor cuts it) on G GPUs and C CPU slots, greedily in character order, with per-step seconds of the default
recipe at 512 px (table STEP_SECONDS: which are measured and which are assumed is said there).
"""

from __future__ import annotations

import heapq
import logging
import tempfile
import time
from pathlib import Path

from charframe.pipeline import executor_ray
from charframe.pipeline.executors import execute, run_inline
from charframe.pipeline.graph import assemble, gpu_steps, plan_graph
from charframe.pipeline.runner import Options, all_targets
from charframe.project import ClusterTable
from charframe.testing.tiny_project import make_tiny_project

STEPS = ("generate", "clean", "pick", "export", "prepare", "train", "merge", "compress", "preview")

#: seconds per step of ONE stage at 512 px with the default recipe (15 codes × 4 candidates, hires 1.5, 28 steps;
#: face 1000 training steps, body 1200), face / body (body images are 512×1024).
#: measured: first-pass generation 1.85 s/img on one H200 (SD1.5 shapes, one ControlNet, 28 steps, fp16:
#:   benchmarks/results/generate-gpu-h200.json); the hires pass is taken as 0.7 × 28 steps at 2.25× the pixels
#:   ≈ 1.75× a first pass → 5.1 s/img face, 10.2 s/img body (twice the pixels); preview 40 images × 20 steps.
#: assumed (not measured here: no GPU in this session, `benchmarks/train.py --gpu` not run yet): training
#:   0.25 s/step (SD1.5 LoRA dim 128, batch 2, fp16, 8-bit AdamW, checkpointing, H100/H200 class); rembg clean
#:   0.8 s/img on one CPU core group; merge 10 s, compress (SVD, dim 128) 40 s on CPU.
STEP_SECONDS = {
    "face": {"generate": 60 * 5.1, "clean": 60 * 0.8, "pick": 3, "export": 2, "prepare": 1, "train": 1000 * 0.25,
             "merge": 10, "compress": 40, "preview": 40 * 1.85 * 20 / 28},
    "body": {"generate": 60 * 10.2, "clean": 60 * 1.6, "pick": 3, "export": 3, "prepare": 1, "train": 1200 * 0.25,
             "merge": 10, "compress": 40, "preview": 40 * 1.85 * 20 / 28},
}


def make_project(root: Path, n: int) -> Path:
    return make_tiny_project(root, {f"c{k:02d}": "kimono" for k in range(n)})


def _ray_run(root: Path, options: Options) -> tuple[float, float, int]:
    """(wall seconds, seconds inside the jobs, jobs) of one forced rerun on Ray."""
    inside: list[float] = []
    run = executor_ray.run_ray
    t = time.perf_counter()
    graph = plan_graph(all_targets(root), options)
    outcomes = run(graph, ClusterTable(cpus=1))
    wall = time.perf_counter() - t
    for outs in outcomes.values():
        inside += [o.seconds for o in outs]
    report = assemble(graph, outcomes)
    assert not report.failed, [(r.target, r.stage, r.step, r.message) for r in report.failed]
    return wall, sum(inside), len(inside)


def main(executor: str, n: int, where: Path | None) -> int:
    import torch

    logging.getLogger("charframe").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    forced = Options(from_step="merge", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_project((where or Path(tmp)) / "executor-bench", n)
        t = time.perf_counter()
        report = execute(all_targets(root), Options(progress=False), executor="local")
        setup = time.perf_counter() - t
        assert not report.failed, report.failed
        per_step: dict[str, list[float]] = {}
        for r in report.results:
            per_step.setdefault(r.step, []).append(r.seconds)
        t = time.perf_counter()
        local = execute(all_targets(root), forced, executor="local")
        local_s = time.perf_counter() - t
        assert not local.failed
        rows = [("local (rerun, this process)", local_s, local_s, 0, None)]
        if executor == "inline":
            t = time.perf_counter()
            graph = plan_graph(all_targets(root), forced)
            outcomes = run_inline(graph, ClusterTable(cpus=1))
            wall = time.perf_counter() - t
            inside = [o.seconds for outs in outcomes.values() for o in outs]
            assert not assemble(graph, outcomes).failed
            rows.append(("inline (graph, this process)", wall, sum(inside), len(inside), None))
        else:
            import ray

            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                for label in ("ray, 1 CPU, cold workers", "ray, 1 CPU, warm workers"):
                    wall, inside, jobs = _ray_run(root, forced)
                    rows.append((label, wall, inside, jobs, (wall - inside) / jobs))
            finally:
                ray.shutdown()
    print(f"executor overhead: {n} tiny characters (face + body), forced merge → compress → preview of every "
          f"stage (set-up: a full local run, {setup:.0f} s)")
    print(f"{'run':<32} {'wall s':>8} {'in jobs s':>10} {'jobs':>5} {'overhead s/job':>15} {'vs local s/job':>15}")
    for label, wall, inside, jobs, per in rows:
        vs = f"{(wall - local_s) / jobs:+.3f}" if jobs else ""
        print(f"{label:<32} {wall:>8.2f} {inside:>10.2f} {jobs:>5} {'' if per is None else f'{per:.3f}':>15} {vs:>15}")
    print("(overhead = wall − time inside the jobs: planning, shipping, scheduling, results; vs local = the whole "
          "difference to the local run, a cold worker's torch/diffusers imports included)")
    print("measured per-step seconds of the set-up run (tiny models, this machine): "
          + ", ".join(f"{s} {sum(v) / len(v):.2f}" for s, v in per_step.items()))
    warm = rows[-1][4]
    if warm is not None:
        print(f"target: ≤ 0.5 s per job (warm) → {'PASS' if warm <= 0.5 else 'FAIL'}")
    print()
    print(estimate_table())
    return 0 if warm is None or warm <= 0.5 else 1


# --- the estimate ------------------------------------------------------------------------------------------

def chain_parts(step_seconds: dict[str, dict[str, float]], overhead: float) -> list[tuple[bool, float]]:
    """One character's parts (on GPU?, seconds) in order: face then body, cut where the resource changes."""
    gpu = gpu_steps()
    parts: list[tuple[bool, float]] = []
    for stage in ("face", "body"):
        for step in STEPS:
            on_gpu = step in gpu
            secs = step_seconds[stage][step]
            if parts and parts[-1][0] == on_gpu:
                parts[-1] = (on_gpu, parts[-1][1] + secs)
            else:
                parts.append((on_gpu, secs))
    return [(g, s + overhead) for g, s in parts]


def simulate(n: int, gpus: int, cpu_slots: int, parts: list[tuple[bool, float]]) -> float:
    """Makespan of n identical chains on `gpus` GPUs and `cpu_slots` CPU tasks at once, each ready part started
    as soon as a unit of its kind is free (earliest ready first, then character order)."""
    free = {True: gpus, False: cpu_slots}
    ready: list[tuple[float, int, int]] = [(0.0, c, 0) for c in range(n)]  # (ready at, character, part index)
    running: list[tuple[float, bool, int, int]] = []
    now = 0.0
    heapq.heapify(ready)
    waiting: list[tuple[float, int, int]] = []
    while ready or running or waiting:
        while ready and ready[0][0] <= now:
            waiting.append(heapq.heappop(ready))
        waiting.sort()
        for item in list(waiting):
            _, c, i = item
            kind = parts[i][0]
            if free[kind]:
                free[kind] -= 1
                waiting.remove(item)
                heapq.heappush(running, (now + parts[i][1], kind, c, i))
        nxt = [t for t in (running[0][0] if running else None, ready[0][0] if ready else None) if t is not None]
        if not nxt:
            break
        now = min(nxt)
        while running and running[0][0] <= now:
            end, kind, c, i = heapq.heappop(running)
            free[kind] += 1
            if i + 1 < len(parts):
                heapq.heappush(ready, (end, c, i + 1))
    return now


def estimate_table(n: int = 50, overhead: float = 0.5) -> str:
    parts = chain_parts(STEP_SECONDS, overhead)
    one = sum(s for _, s in parts)
    gpu_time = sum(s for g, s in parts if g)
    rows = [("1 GPU, local (one step after another)", n * one)]
    for gpus, cpus in ((1, 4), (8, 8), (8, 16), (8, 32)):
        rows.append((f"{gpus} GPU(s), {cpus} CPU tasks at once (ray)", simulate(n, gpus, cpus, parts)))
    lines = [f"estimate: {n} characters (face + one outfit), default recipe at 512 px; per character "
             f"{one / 60:.0f} min of steps, {gpu_time / 60:.0f} min of them on the GPU; {overhead} s per job added",
             f"{'setting':<42} {'hours':>7} {'speed-up':>9}"]
    lines += [f"{label:<42} {secs / 3600:>7.2f} {rows[0][1] / secs:>8.1f}×" for label, secs in rows]
    lines.append(f"lower bound on 8 GPUs (GPU work / 8): {n * gpu_time / 8 / 3600:.2f} h")
    return "\n".join(lines)
