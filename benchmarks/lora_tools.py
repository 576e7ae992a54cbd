"""Benchmark: charframe compress / FACE merge on an SD1.5-sized 128-dim Lora3x3 vs the naive method.

    python benchmarks/lora_tools.py                    # naive timed on one module per ΔW shape, extrapolated
    python benchmarks/lora_tools.py --quick            # the same with one charframe run per operation
    python benchmarks/lora_tools.py --naive all        # naive on every module (several minutes on 2 cores)

The synthetic file has the real SD1.5 module names and shapes (UNet2DConditionModel with the SD1.5
config + CLIP ViT-L/14 text encoder, built on the meta device), kohya Lora3x3 targets (attention,
1x1 conv, resnet/down/upsampler 3x3 convs, text encoder), rank 128, alpha 64, fp16, and a decaying
singular-value profile per module like trained LoRAs.

Naive = what sd-scripts' resize_lora does per module: form ΔW = up·down·alpha/r in float32, SVD it
with torch.linalg.svd, pick the rank from the singular values, cut U/S/Vh. Each module is timed with
1 and with all torch threads and the faster time counts (multi-threaded LAPACK collapses when other
processes share the CPU, and we do not want that to inflate the naive time). We call the thin SVD
(full_matrices=False), which is *faster* than resize_lora's default full_matrices=True call
(`--resize-call` times that once on the largest 3x3 ΔW), so the speed-up shown is a lower bound.

charframe runs in a fresh interpreter per measurement. Memory: after importing torch and charframe the
kernel's peak-RSS mark is reset (write 5 to /proc/self/clear_refs); "peak RSS over baseline" is VmHWM
after the operation minus VmRSS before it (resident pages of the input file's memory map included).
The absolute peak is printed too; where clear_refs is unavailable, ru_maxrss is used instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {"compress": ("≥ 50× faster than naive, identical ranks", "< 5 s", "≤ 2× file size"), "merge": "< 3 s"}


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib(reset: bool) -> float:
    return _status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(op: str, path: str) -> None:
    """Run one operation in this (fresh) process and print timing + memory as JSON."""
    import torch  # noqa: F401  (baseline includes torch)

    from charframe.lora.blocks import load_presets
    from charframe.lora.ops.compress import compress_file
    from charframe.lora.functional import RankRule
    from charframe.lora.ops.merge import merge_file

    reset = _reset_peak()
    base = _status_mib("VmRSS") if reset else _peak_mib(False)
    t0 = time.perf_counter()
    if op == "compress":
        res = compress_file(path, RankRule("sv_ratio", 16, 128), overwrite=True)
        extra = {"ranks": {m.name: m.rank_out for m in res.modules}, "mean_rank": res.mean_rank}
    else:
        res = merge_file(path, load_presets()["FACE"], "FACE", overwrite=True)
        extra = {"kept": res.kept}
    wall = time.perf_counter() - t0
    peak = _peak_mib(reset)
    print(json.dumps({"wall": wall, "base_mib": base, "peak_mib": peak, "rss_how": "VmHWM" if reset else "ru_maxrss",
                      "out_bytes": res.output.stat().st_size, **extra}))


def run_child(op: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", op, str(path)], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_file(path: Path, rank: int = 128, seed: int = 0) -> dict[str, tuple[int, ...]]:
    import torch

    from charframe.lora.io import save_lora_file
    from charframe.testing.synthetic_lora import random_network, sd15_targets

    targets = sd15_targets(conv3x3=True)
    tensors = random_network(targets, rank, "lora", alpha=rank / 2, dtype=torch.float16, seed=seed)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank // 2),
            "ss_network_args": json.dumps({"conv_dim": str(rank), "conv_alpha": str(rank // 2)}),
            "ss_output_name": path.stem, "ss_base_model_version": "sd_v1"}  # fmt: skip
    save_lora_file(path, tensors, meta)
    return targets


def naive(path: Path, mode: str) -> dict:
    """resize_lora's procedure per module (thin SVD); `mode` "all" or "per-shape" (one module per shape)."""
    import torch

    from charframe.lora.functional import RankRule, select_rank
    from charframe.util.workers import torch_threads
    from charframe.lora.io import read_network

    net = read_network(path)
    rule = RankRule("sv_ratio", 16, 128)
    by_shape: dict[tuple, list] = defaultdict(list)
    for m in net.modules.values():
        t = m.tensors
        by_shape[(t["lora_up.weight"].shape[0], math.prod(t["lora_down.weight"].shape[1:]))].append(m)
    chosen = [(ms[0], len(ms)) for ms in by_shape.values()] if mode == "per-shape" else [(m, 1) for m in net.modules.values()]
    total, ranks = 0.0, {}
    for m, count in chosen:
        t = m.tensors
        best = math.inf
        for threads in (1, torch.get_num_threads()):  # each module at its faster thread setting
            with torch_threads(threads):
                t0 = time.perf_counter()
                up = t["lora_up.weight"].float().reshape(t["lora_up.weight"].shape[0], -1)
                down = t["lora_down.weight"].float().reshape(m.rank, -1)
                delta = up @ down * m.scale
                u, s, vh = torch.linalg.svd(delta, full_matrices=False)
                k = select_rank(s, rule)
                _ = (u[:, :k] * s[:k]).half(), vh[:k].half()
                best = min(best, time.perf_counter() - t0)
        total += best * count
        ranks[m.name] = k
    return {"wall": total, "ranks": ranks, "modules_timed": len(chosen), "modules": len(net.modules), "shapes": len(by_shape)}


def resize_call(path: Path) -> tuple[str, float]:
    """resize_lora's exact call, torch.linalg.svd(ΔW) with full_matrices=True, on the largest 3x3 ΔW."""
    import torch

    from charframe.lora.io import read_network

    net = read_network(path)
    m = max((m for m in net.modules.values() if m.kernel == (3, 3)), key=lambda m: m.tensors["lora_down.weight"].numel())
    up = m.tensors["lora_up.weight"].float().reshape(m.tensors["lora_up.weight"].shape[0], -1)
    delta = up @ m.tensors["lora_down.weight"].float().reshape(m.rank, -1)
    t0 = time.perf_counter()
    torch.linalg.svd(delta)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch.linalg.svd(delta, full_matrices=False)
    return f"{m.name} {tuple(delta.shape)}", full / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--naive", choices=("per-shape", "all"), default="per-shape")
    ap.add_argument("--repeat", type=int, default=3, help="charframe runs per operation (best wall reported)")
    ap.add_argument("--quick", action="store_true", help="one charframe run per operation (same as --repeat 1)")
    ap.add_argument("--resize-call", action="store_true", help="also time resize_lora's full_matrices=True call once")
    ap.add_argument("--keep", metavar="DIR", help="build the file in DIR and keep it")
    ap.add_argument("--child", nargs=2, metavar=("OP", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    if args.quick:
        args.repeat = 1

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="charframe-bench-"))
    src = workdir / "synthetic-sd15-Lora3x3-128.safetensors"
    t0 = time.perf_counter()
    built = not src.exists()
    if built:
        build_file(src)
    build_s = f"built in {time.perf_counter() - t0:.1f} s" if built else "reused"
    size = src.stat().st_size
    face_in = workdir / "face-input.safetensors"
    face_in.write_bytes(src.read_bytes())

    comp = [run_child("compress", src) for _ in range(args.repeat)]
    merge = [run_child("merge", face_in) for _ in range(args.repeat)]
    best = min(comp, key=lambda r: r["wall"])
    best_merge = min(merge, key=lambda r: r["wall"])
    nv = naive(src, args.naive)
    same = sum(best["ranks"][n] == k for n, k in nv["ranks"].items())
    rss = max(r["peak_mib"] - r["base_mib"] for r in comp)
    rss_abs = max(r["peak_mib"] for r in comp)
    speedup = nv["wall"] / best["wall"]
    mib = size / 2**20
    naive_how = (f"measured on all {nv['modules']} modules" if args.naive == "all" else
                 f"extrapolated: 1 module per ΔW shape ({nv['shapes']} shapes) × modules of that shape")  # fmt: skip

    print(f"\nfile: {src.name}: {nv['modules']} modules, {mib:.1f} MiB fp16 ({build_s}); "
          f"torch threads {__import__('torch').get_num_threads()}, {os.cpu_count()} CPUs")  # fmt: skip
    rows = [
        ("compress sv_ratio 16, max rank 128", f"{best['wall']:.2f} s (best of {args.repeat}; runs: "
         + ", ".join(f"{r['wall']:.2f}" for r in comp) + ")", "< 5 s", best["wall"] < 5),
        ("naive: ΔW + torch.linalg.svd per module", f"{nv['wall']:.1f} s ({naive_how})", "", None),
        ("speed-up vs naive", f"{speedup:.0f}×", "≥ 50×", speedup >= 50),
        ("identical ranks", f"{same}/{len(nv['ranks'])} compared modules", "all", same == len(nv["ranks"])),
        ("peak RSS over baseline (torch imported)", f"{rss:.0f} MiB = {rss / mib:.2f}× file (absolute peak {rss_abs:.0f} MiB, baseline {best['base_mib']:.0f} MiB)",
         f"≤ {2 * mib:.0f} MiB", rss <= 2 * mib),
        ("output size / mean rank", f"{best['out_bytes'] / 2**20:.1f} MiB / {best['mean_rank']:.1f}", "", None),
        ("FACE merge", f"{best_merge['wall']:.2f} s (best of {args.repeat}; runs: " + ", ".join(f"{r['wall']:.2f}" for r in merge)
         + f"), {best_merge['kept']} modules kept, {best_merge['out_bytes'] / 2**20:.1f} MiB", "< 3 s", best_merge["wall"] < 3),
    ]  # fmt: skip
    if args.resize_call:
        name, ratio = resize_call(src)
        rows.append(("resize_lora's full_matrices=True vs thin SVD", f"{ratio:.1f}× slower on {name}", "", None))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'result':<60}  target   ok")
    for name, value, target, ok in rows:
        print(f"{name:<{w}}  {value:<60}  {target:<7}  {'' if ok is None else ('yes' if ok else 'NO')}")
    if not args.keep:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
