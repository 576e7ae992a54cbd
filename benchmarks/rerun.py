"""Benchmark: `charframe rerun --all` on a project where everything is up to date must decide "nothing to do"
in ≤ 1 s for 50 characters with 40 images each, with every step's outputs checked against their record (issues
10 and 19), and a caption-rule change across all 50 must be planned (the dry run) in ≤ 2 s, on 2 cores.

    python benchmarks/rerun.py            # 50 characters × 40 images
    python benchmarks/rerun.py --quick    # 10 characters × 40 images
    python benchmarks/rerun.py --executor ray      # Ray's scheduling overhead per job; the 8-GPU estimate
    python benchmarks/rerun.py --estimate          # the estimate alone (50 characters, 8 GPUs)

Set-up (not timed): a project with N character files; each character's 40 face images exist in every place the
pipeline keeps them (raw candidates, cleaned and transparent copies, picks, the exported dataset), captions and
dataset TOML are written by the real `prepare`, and the LoRA / merged / compressed / preview files exist. The
manifests are recorded by the real runner over a table whose rows keep the real inputs, outputs and settings but
whose work is only "make sure the output files exist" — what is measured is the decision, which reads only
manifests, folders and file stats, and which is the same whatever made the files.

Timed, all with the real step table:
- `planner`: `rerun()` over every character file in one process (imports done) — the ≤ 1 s target;
- `naive full hash`: the same decision made by reading and hashing every input and output file of every step;
- `charframe rerun --all`: the command in a fresh process, Python start-up and imports included;
- `plan after a rule change`: a caption rule added to charframe.toml, then the dry run of all 50 (every prepare
  stale, everything after it decided when reached) — the ≤ 2 s target.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from charframe.dataset.prepare import prepare_dirs
from charframe.pipeline.runner import Options, Records, all_targets, plan_jobs, plan_targets, rerun
from charframe.util.manifest import digest_file
from charframe.pipeline.stages import target_jobs
from charframe.pipeline.steps import STEPS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerun_executors as executor_bench  # noqa: E402

N_IMAGES = 40
CODES = [f"f{e}{d}" for e in range(3) for d in range(5)]


def _png(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _materialise(fn, job, ctx) -> None:
    """Make the step's declared output files exist (the set-up's substitute for the work itself)."""
    c = job.character
    work = c.work_dir("face")
    names = [f"{CODES[i % len(CODES)]}-{i:02d}" for i in range(N_IMAGES)]
    for fs in STEP_OUTPUTS[fn](job):
        if fs.patterns:
            fs.root.mkdir(parents=True, exist_ok=True)
            if fs.root.parent == work:  # raw/, clean/, alpha/
                for i, n in enumerate(names):
                    (fs.root / f"{n}.png").write_bytes(_png(i))
        elif not fs.root.exists():
            fs.root.parent.mkdir(parents=True, exist_ok=True)
            fs.root.write_bytes(b"picks = {}\n" if fs.root.suffix == ".toml" else _png(0))
    if fn == "export":
        folder = job.dataset / c.subset("f", 64)
        folder.mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(names):
            (folder / f"{n}.png").write_bytes(_png(i))
    if fn == "prepare":
        prepare_dirs([job.dataset])


STEP_OUTPUTS = {s.name: s.outputs for s in STEPS}
SETUP_TABLE = tuple(dataclasses.replace(s, call="builtins:str", run=lambda fn, job, ctx, name=s.name: _materialise(name, job, ctx))
                    for s in STEPS)


def make_project(root: Path, n: int) -> None:
    (root / "Characters").mkdir(parents=True)
    (root / "LoRAInput").mkdir()
    for k in range(n):
        (root / "Characters" / f"c{k:02d}.toml").write_text(
            f'keyword = "c{k:02d}"\nprompt = "1girl"\n[training.face]\nlogic = "Lora1x1A1-AdamW8"\ndim = 4\nsteps = 10\n')
    report = rerun(all_targets(root), Options(stage="face", progress=False), SETUP_TABLE)
    assert not report.failed, report.failed


def naive_full_hash(root: Path) -> int:
    """The same decision with every input and output file read and hashed (no size/mtime shortcut)."""
    stale = 0
    records = Records()
    for target in all_targets(root):
        for p in plan_jobs(target_jobs(target, "face"), Options(), STEPS, records):
            m = records.of(p.job)
            entry = m.outputs.get(p.record)
            ins = {m.set_key(f): digest_file(f) for f in records.paths(p.step.inputs(p.job))}
            outs = {m.set_key(f): digest_file(f) for f in records.paths(p.step.outputs(p.job))}
            stale += entry is None or ins != {k: v[2] for k, v in entry["inputs"].items()} \
                or any(outs.get(k) != v[2] for k, v in entry["files"].items())
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 characters instead of 50")
    ap.add_argument("--dir", type=Path, help="where to build the project (default: a temporary folder)")
    ap.add_argument("--executor", choices=("ray", "inline"), help="time the executor's overhead per job instead")
    ap.add_argument("--characters", type=int, default=3, help="--executor: tiny characters (default 3)")
    ap.add_argument("--estimate", action="store_true", help="only the 50-character, 8-GPU estimate")
    args = ap.parse_args(argv)
    if args.estimate:
        print(executor_bench.estimate_table())
        return 0
    if args.executor:
        return executor_bench.main(args.executor, args.characters, args.dir)
    n = 10 if args.quick else 50
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = (args.dir or Path(tmp)) / "bench-project"
        t0 = time.perf_counter()
        make_project(root, n)
        setup = time.perf_counter() - t0
        files = sum(1 for _ in (root / "LoRAInput").rglob("*.png")) + sum(1 for _ in (root / "LoRAWork").rglob("*.png"))

        rerun(all_targets(root), Options(stage="face", progress=False), STEPS)  # warm the OS file cache
        t0 = time.perf_counter()
        report = rerun(all_targets(root), Options(stage="face", progress=False), STEPS)
        planner = time.perf_counter() - t0
        assert not report.ran and not report.failed, [r for r in report.results if r.status != "up to date"]

        t0 = time.perf_counter()
        stale = naive_full_hash(root)
        naive = time.perf_counter() - t0
        assert stale == 0

        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "charframe", "rerun", "--all", "--stage", "face", "--project", str(root)],
                              capture_output=True, text=True)
        cli = time.perf_counter() - t0
        assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stdout + proc.stderr

        with open(root / "charframe.toml", "a", encoding="utf-8") as f:
            f.write('[[captions.rule]]\nname = "new tag"\nkind = "f"\ntags = ["new tag"]\n')
        t0 = time.perf_counter()
        plans = plan_targets(all_targets(root), Options(stage="face"), STEPS)
        rule_plan = time.perf_counter() - t0
        stale_prepare = sum(1 for _, plan in plans for p in plan if p.step.name == "prepare" and p.reason)
        assert stale_prepare == n, stale_prepare

    steps = len(report.results)
    print(f"rerun --all: {n} characters × {N_IMAGES} images ({files} image files, {steps} steps checked; set-up {setup:.1f} s)")
    print(f"{'approach':<32} {'seconds':>8} {'ms/character':>13}")
    for name, sec in (("planner (size+mtime, digests)", planner), ("naive full hash", naive),
                      ("charframe rerun --all (process)", cli), ("plan after a rule change", rule_plan)):
        print(f"{name:<32} {sec:>8.3f} {1000 * sec / n:>13.1f}")
    ok = planner <= 1.0 and rule_plan <= 2.0
    print(f"targets: nothing to do ≤ 1 s → {'PASS' if planner <= 1.0 else 'FAIL'}; "
          f"rule change planned ≤ 2 s → {'PASS' if rule_plan <= 2.0 else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
