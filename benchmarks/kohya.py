"""Benchmark and compatibility check: the built-in trainer against kohya sd-scripts on the same job.

    python benchmarks/kohya.py --kohya-dir ../sd-scripts             # CPU: SD1.5-shaped model, 64 px
    python benchmarks/kohya.py --kohya-dir ../sd-scripts --gpu       # 512 px, batch 2, dim 128 (a CUDA GPU)
    python benchmarks/kohya.py --kohya-dir ../sd-scripts --golden tests/data/sd_scripts_sd15_keys.json.gz

Both engines get one `TrainPlan` (same logic, dim, lr, steps, seed, dataset TOML and checkpoint):
the built-in trainer through `charframe.training.engines.builtin.train`, sd-scripts through
`charframe.training.engines.kohya.run_kohya` (the exact `accelerate launch train_network.py` command that
`charframe train --engine kohya` runs). The model is a random checkpoint with SD1.5's shapes, written
in the original single-file layout, because sd-scripts only loads full-size SD1.x models.

- steps/s: from the wall times both engines log with `loss/current` to TensorBoard, first `--warmup`
  steps left out; so model loading and saving are not counted for either.
- peak memory: on CPU the largest resident set of the run's processes; with a GPU the largest
  `nvidia-smi` memory.used during the run (CUDA context included, the same for both).
- the files: same keys, shapes and dtypes, same alpha values, and the `ss_*` keys only one side writes.
- On CPU sd-scripts runs with one thread (`--num_cpu_threads_per_process 1`, as charframe launches it),
  so the built-in trainer is given one thread too; both use fp32 (`--mixed-precision no`) and gradient
  checkpointing (sd-scripts always checkpoints under these recipes). With `--gpu` both run the recipe
  as is: fp16, gradient checkpointing, 8-bit AdamW, SDPA.
- `--golden FILE` stores sd-scripts' key names and shapes for every network; `tests/test_train_network.py`
  checks the built-in trainer against them without sd-scripts.
Target (issue 5): the built-in trainer's steps/s at least sd-scripts' on the same machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LOGICS = ("Lora3x3A50p-AdamW8", "Lora1x1A50p-AdamW8", "LoconA50p-AdamW8", "LohaA50p-AdamW8")


def write_sd15_checkpoint(path: Path) -> Path:
    """A random fp16 checkpoint with SD1.5's shapes in the single-file layout sd-scripts loads."""
    import torch
    from safetensors.torch import save_file

    from charframe.testing.ldm_layout import to_ldm_checkpoint
    from train import sd15_shaped

    comps = sd15_shaped("cpu")
    state = {k: v.to(torch.float16).contiguous() for k, v in to_ldm_checkpoint(comps.unet, comps.vae, comps.text_encoder).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def step_times(log_dir: Path) -> list[float]:
    """Wall times of the `loss/current` scalars under `log_dir` (one per optimizer step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: list[float] = []
    for events in sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "loss/current" in acc.Tags()["scalars"]:
            times += [e.wall_time for e in acc.Scalars("loss/current")]
    return sorted(times)


class GpuPeak:
    """Largest `nvidia-smi` memory.used (MiB) while the block runs; None without nvidia-smi."""

    def __enter__(self) -> "GpuPeak":
        self.peak: float | None = None
        exe = shutil.which("nvidia-smi")
        self.proc = None if exe is None else subprocess.Popen(
            [exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE, text=True)
        if self.proc:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak or 0.0, float(line))

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.thread.join(timeout=5)


def worker(args: argparse.Namespace) -> int:
    """One engine, one logic, in this fresh process; prints a RESULT line."""
    import torch

    from charframe.training.plan import make_plan

    cuda = torch.cuda.is_available()
    work = Path(args.workdir)
    log_dir = work / "log" / args.worker / args.logic
    plan = make_plan(args.logic, args.dim, 100, args.steps, dataset=str(work / "data" / "bench.toml"), out=args.worker,
                     model=str(args.model), output_dir=str(work / "out"), logging_dir=str(log_dir),
                     **({} if cuda else {"mixed_precision": "no"}))
    shutil.rmtree(log_dir, ignore_errors=True)  # step_times reads every event file below it
    for old in (work / "out" / args.worker).glob(f"{plan.output_name}*"):
        old.unlink()
    with GpuPeak() as gpu:
        if args.worker == "kohya":
            from charframe.training.engines.kohya import find_kohya, run_kohya

            out = run_kohya(plan, find_kohya(args.kohya_dir, args.kohya_python), runner=_quiet_run)
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        else:
            from charframe.training.engines.builtin import train

            if not cuda:
                torch.set_num_threads(1)
            out = train(plan, checkpointing=True).output
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = step_times(log_dir)[args.warmup:]
    result = {"file": str(out), "steps_per_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
              "timed_steps": len(times) - 1, "peak_rss_mb": rss, "peak_gpu_mib": gpu.peak}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _quiet_run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    """Run sd-scripts, keeping its output for the error message instead of the terminal."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    return proc


def read_file(path: str) -> "FileInfo":
    """key → (shape, dtype, alpha value or None), and the metadata."""
    from safetensors import safe_open

    out = {}
    with safe_open(path, "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            out[k] = (list(t.shape), str(t.dtype).removeprefix("torch."), float(t) if k.endswith(".alpha") else None)
        return out, f.metadata() or {}


FileInfo = tuple[dict[str, tuple[list[int], str, float | None]], dict[str, str]]


def compare(builtin: FileInfo, kohya: FileInfo) -> dict[str, object]:
    (a, am), (b, bm) = builtin, kohya
    shared = set(a) & set(b)
    return {
        "same_keys": set(a) == set(b),
        "only_builtin": sorted(set(a) - set(b))[:5],
        "only_kohya": sorted(set(b) - set(a))[:5],
        "shape_dtype_diffs": sorted(k for k in shared if a[k][:2] != b[k][:2])[:5],
        "alpha_diffs": sorted(k for k in shared if a[k][2] != b[k][2])[:5],
        "meta_only_kohya": sorted(set(bm) - set(am)),
        "meta_only_builtin": sorted(set(am) - set(bm)),
    }


def write_golden(path: Path, files: dict[str, FileInfo]) -> None:
    """sd-scripts' tensor keys and shapes per logic, and its metadata keys (values are random or
    run-specific; names and shapes are the contract)."""
    data = {"keys": {logic: {k: v[0] for k, v in tensors.items()} for logic, (tensors, _) in files.items()},
            "metadata_keys": sorted(set().union(*(md for _, md in files.values())))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), mtime=0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kohya-dir", type=Path, help="sd-scripts checkout (default: $CHARFRAME_KOHYA_DIR)")
    ap.add_argument("--kohya-python", type=Path, help="its python (default: <checkout>/venv)")
    ap.add_argument("--gpu", action="store_true", help="512 px, batch 2, dim 128, 30 steps (CUDA)")
    ap.add_argument("--logics", default=None, help="comma-separated (default: all four networks on CPU, Lora3x3 with --gpu)")
    ap.add_argument("--steps", type=int, help="steps per run (default 8 on CPU, 30 with --gpu)")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/charframe-kohya-bench"), help="model, data and outputs")
    ap.add_argument("--model", type=Path, help="SD1.x checkpoint (default: a random SD1.5-shaped one in --workdir)")
    ap.add_argument("--golden", type=Path, help="write sd-scripts' keys and shapes here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--logic", help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        return worker(args)

    size, batch, dim, steps = (512, 2, 128, 30) if args.gpu else (64, 2, 8, 8)
    steps = args.steps or steps
    logics = args.logics.split(",") if args.logics else (["Lora3x3A50p-AdamW8"] if args.gpu else list(LOGICS))
    work = args.workdir.absolute()
    model = args.model or work / "sd15-random.safetensors"
    if not model.is_file():
        print(f"writing a random SD1.5-shaped checkpoint to {model} …", flush=True)
        write_sd15_checkpoint(model)
    from train import make_dataset

    shutil.rmtree(work / "data", ignore_errors=True)
    make_dataset(work / "data", size, batch)
    print(f"SD1.5-shaped model, {size} px, batch {batch}, dim {dim}, {steps} steps ({args.warmup} untimed), "
          f"{'GPU, recipe precision' if args.gpu else 'CPU, 1 thread, fp32'}, gradient checkpointing on both", flush=True)
    rows, files = [], {}
    for logic in logics:
        pair = {}
        for engine in ("builtin", "kohya"):
            cmd = [sys.executable, __file__, "--worker", engine, "--logic", logic, "--dim", str(dim), "--steps", str(steps),
                   "--warmup", str(args.warmup), "--workdir", str(work), "--model", str(model)]
            if args.kohya_dir:
                cmd += ["--kohya-dir", str(args.kohya_dir)]
            if args.kohya_python:
                cmd += ["--kohya-python", str(args.kohya_python)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{logic} {engine}: failed\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
                return 1
            pair[engine] = json.loads(line[7:])
            r = pair[engine]
            mem = f"{r['peak_gpu_mib']:.0f} MiB GPU" if r["peak_gpu_mib"] else f"{r['peak_rss_mb']:.0f} MB RSS"
            rows.append((logic, engine, r["steps_per_s"], mem))
            print(f"  {logic:<22} {engine:<8} {r['steps_per_s']:.4f} steps/s  {mem}", flush=True)
        files[logic] = read_file(pair["kohya"]["file"])  # each file is read once
        diff = compare(read_file(pair["builtin"]["file"]), files[logic])
        ok = diff["same_keys"] and not diff["shape_dtype_diffs"] and not diff["alpha_diffs"]
        print(f"  {logic}: files {'identical in keys, shapes, dtypes and alphas' if ok else 'DIFFER: ' + json.dumps(diff)}")
        print(f"    ss_* only sd-scripts writes: {', '.join(diff['meta_only_kohya']) or '-'}")
        print(f"    ss_* only charframe writes: {', '.join(diff['meta_only_builtin']) or '-'}")
    print(f"\n| logic | engine | steps/s | peak memory |\n|---|---|---|---|")
    for logic, engine, sps, mem in rows:
        print(f"| {logic} | {engine} | {sps:.4f} | {mem} |")
    for logic in logics:
        b, k = (next(r[2] for r in rows if r[0] == logic and r[1] == e) for e in ("builtin", "kohya"))
        print(f"{logic}: built-in at {b / k:.2f}x sd-scripts' steps/s ({'target met' if b >= k else 'target MISSED'})")
    if args.golden:
        write_golden(args.golden, files)
        print(f"wrote {args.golden}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
