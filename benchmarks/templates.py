"""Benchmark: the full default template set (2 sets × 15 codes, all maps, 1024 px).

Prints seconds per stage (summed over the worker processes) and the wall time of
`generate_templates`, which must stay under 60 s on a 2-core machine. For reference it also
renders one view the naive way: every primitive tested at every pixel (no screen-rectangle
culling) with full 3×3 supersampling, against the adaptive renderer the templates use.

    python benchmarks/templates.py            # timing table
    python benchmarks/templates.py --check    # + regenerate everything and compare with the
                                              #   committed FaceTemplate/ and BodyTemplate/
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charframe.templates.writer import ALL_MAPS, generate_templates  # noqa: E402
from charframe.templates.camera import camera_for  # noqa: E402
from charframe.templates.mannequin import build_mannequin  # noqa: E402
from charframe.templates.render import render  # noqa: E402

LIMIT_S = 60.0


def full_set(out: Path, workers: int | None) -> tuple[float, dict[str, float], list[Path]]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    paths = generate_templates(out, timings=timings, workers=workers)
    return time.perf_counter() - start, timings, paths


def reference_view(code: str = "f00", size: int = 1024) -> tuple[float, float]:
    """(naive seconds, adaptive seconds) for one view."""
    man = build_mannequin()
    cam = camera_for(code, size)
    start = time.perf_counter()
    render(man, cam.scaled(3), aa=1, cull=False)
    naive = time.perf_counter() - start
    start = time.perf_counter()
    render(man, cam)
    return naive, time.perf_counter() - start


def check(generated: Path) -> list[tuple[str, float, float]]:
    """Compare every regenerated file with the committed one: (file, mean |diff|, max |diff|)."""
    rows = []
    for folder in ("FaceTemplate", "BodyTemplate"):
        for new_path in sorted((generated / folder).rglob("*.png")):
            rel = new_path.relative_to(generated)
            old_path = ROOT / rel
            if not old_path.exists():
                rows.append((str(rel), float("inf"), float("inf")))
                continue
            a = np.asarray(Image.open(old_path)).astype(int)
            b = np.asarray(Image.open(new_path)).astype(int)
            if a.shape != b.shape:
                rows.append((str(rel), float("inf"), float("inf")))
                continue
            d = np.abs(a - b)
            rows.append((str(rel), float(d.mean()), float(d.max())))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed templates")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    args = parser.parse_args()

    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        wall, timings, paths = full_set(Path(tmp), args.workers)
        print(f"\nfull default set: 2 sets x 15 codes, maps {', '.join(ALL_MAPS)}, 1024 px, {len(paths)} files")
        print(f"{'stage':<12}{'seconds':>10}   (summed over processes)")
        for stage in ("render", "clay", *ALL_MAPS, "encode", "write", "overview"):
            print(f"{stage:<12}{timings.get(stage, 0.0):>10.2f}")
        print(f"{'cpu total':<12}{sum(timings.values()):>10.2f}")
        print(f"{'WALL':<12}{wall:>10.2f}   limit {LIMIT_S:.0f} s: {'OK' if wall < LIMIT_S else 'TOO SLOW'}")

        naive, adaptive = reference_view()
        print("\none view (f00, 1024 px) rendered to depth/normal/part buffers:")
        print(f"{'naive: no culling, full 3x3 supersampling':<48}{naive:>8.2f} s")
        print(f"{'ours: culled, 3x3 samples on edge pixels only':<48}{adaptive:>8.2f} s  ({naive / adaptive:.1f}x faster)")

        if args.check:
            rows = check(Path(tmp))
            bad = [r for r in rows if r[1] >= 0.5]
            print(f"\nreproduction: {len(rows)} files, worst mean |diff| "
                  f"{max(r[1] for r in rows):.3f}, worst max |diff| {max(r[2] for r in rows):.0f}")
            for name, mean, worst in bad:
                print(f"  DIFFERS {name}: mean {mean:.3f} max {worst:.0f}")
            if bad:
                return 1
    return 0 if wall < LIMIT_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
