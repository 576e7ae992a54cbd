"""Benchmark: `charframe prepare` (captions + dataset TOML) over 20,000 small images in 200 folders.

Compared in the same run against a naive method (decode every image with Pillow to learn its
size, write each caption with a plain open/write, no change detection). Both trees are generated
identically in a temporary folder; the captions and TOML contents of both are checked to agree.

    python benchmarks/prepare.py [--datasets 10] [--folders 20] [--images 100]

Target: charframe's fresh run (tag + toml) under 5 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charframe.util import toml as tomlio  # noqa: E402
from charframe.dataset.captions import caption_for, default_rules  # noqa: E402
from charframe.dataset.toml_writer import CLASS_NAMES, batch_sizes, resolution_of, size_class  # noqa: E402
from charframe.dataset.naming import parse_code, parse_dataset_name, parse_subset_name  # noqa: E402
from charframe.dataset.prepare import prepare_dirs  # noqa: E402

CODES = [f"{k}{e}{d}" for k in "fb" for e in range(3) for d in range(8)]
SIZES = {"f0512": (512, 512), "f0768": (768, 768), "b0768": (512, 768), "f0384": (384, 384)}


def png_bytes(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (20, 20, 20)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def make_tree(root: Path, datasets: int, folders: int, images: int) -> list[Path]:
    """`datasets` dataset folders × `folders` subsets × `images` PNGs (a few without a code)."""
    blobs = {suffix: png_bytes(size) for suffix, size in SIZES.items()}
    out = []
    for d in range(datasets):
        ds = root / "LoRAInput" / f"{d % 5 + 1}_chara{d:02d}"
        out.append(ds)
        for s in range(folders):
            suffix = list(SIZES)[s % len(SIZES)]
            sub = ds / f"chara{d:02d} girl, long hair, 'ribbon'_v{s:02d}_{suffix}"
            sub.mkdir(parents=True)
            blob = blobs[suffix]
            for i in range(images):
                name = f"{CODES[i % len(CODES)]}-{i:03d}.png" if i % 50 != 49 else f"extra{i:03d}.png"
                (sub / name).write_bytes(blob)
    return out


def naive_prepare(dirs: list[Path]) -> None:
    """The straightforward way: decode each image for its size, write every caption, dump the TOML."""
    rules = default_rules()
    batches = batch_sizes("default")
    for ds in dirs:
        blocks: dict[str, list[dict]] = {}
        for folder, _, files in sorted(os.walk(ds)):
            imgs = sorted(f for f in files if f.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
            if not imgs or Path(folder) == ds:
                continue
            classes = set()
            for name in imgs:
                with Image.open(os.path.join(folder, name)) as im:
                    im.load()
                    w, h = im.size
                classes.add(f"{size_class(w)}_{size_class(h)}")
                if parse_code(name):
                    with open(os.path.join(folder, os.path.splitext(name)[0] + ".txt"), "w", encoding="utf-8") as f:
                        f.write(caption_for(name, os.path.basename(folder), rules))
            assert len(classes) == 1
            sub = parse_subset_name(folder)
            blocks.setdefault(classes.pop(), []).append({"image_dir": os.path.abspath(folder), "class_tokens": sub.class_tokens, "flip_aug": sub.flip_aug})
        data = {
            "general": {"color_aug": True, "enable_bucket": True, "bucket_no_upscale": True, "caption_extension": ".txt", "num_repeats": parse_dataset_name(ds).repeats},
            "datasets": [{"resolution": list(resolution_of(c)), "batch_size": batches[c], "subsets": blocks[c]} for c in CLASS_NAMES if c in blocks],
        }
        (ds / f"{ds.name}.toml").write_text(tomlio.dumps(data), encoding="utf-8")


def timed(fn) -> float:
    os.sync()  # start each run with no dirty pages from the one before (fair, repeatable)
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=10)
    ap.add_argument("--folders", type=int, default=20, help="subset folders per dataset")
    ap.add_argument("--images", type=int, default=100, help="images per folder")
    ap.add_argument("--repeat", type=int, default=3, help="fresh charframe runs, each on its own new tree (disk noise)")
    args = ap.parse_args()
    logging.getLogger("charframe").setLevel(logging.ERROR)
    n_images = args.datasets * args.folders * args.images
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        t0 = time.perf_counter()
        naive_root = Path(tmp) / "naive"
        naive_dirs = make_tree(naive_root, args.datasets, args.folders, args.images)
        roots = [Path(tmp) / f"charframe{i}" for i in range(args.repeat)]
        cf_dirs = [make_tree(r, args.datasets, args.folders, args.images) for r in roots]
        t_gen = time.perf_counter() - t0
        naive = timed(lambda: naive_prepare(naive_dirs))
        fresh = [timed(lambda d=d: prepare_dirs(d)) for d in cf_dirs]
        rerun = timed(lambda: prepare_dirs(cf_dirs[-1]))
        # Same results: captions byte for byte, TOML data equal up to the tree's root path.
        a, b = roots[-1], naive_root
        caps_a = sorted((p.relative_to(a), p.read_bytes()) for p in a.rglob("*.txt"))
        caps_b = sorted((p.relative_to(b), p.read_bytes()) for p in b.rglob("*.txt"))
        assert caps_a == caps_b and len(caps_a) == n_images * 49 // 50, "captions differ from the naive method"
        for da, db in zip(cf_dirs[-1], naive_dirs):
            ta = tomlio.load(da / f"{da.name}.toml")
            tb = tomlio.load(db / f"{db.name}.toml")
            assert str(ta).replace(str(a), str(b)) == str(tb), f"TOML differs for {da.name}"
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{n_images} images in {args.datasets * args.folders} folders ({args.datasets} datasets); trees generated in {t_gen:.1f} s; {os.cpu_count()} CPUs, load {load:.1f}")
    fresh_sorted = sorted(fresh)
    rows = [
        ("naive: PIL decode + plain writes", naive),
        (f"charframe prepare, fresh (best of {len(fresh)})", fresh_sorted[0]),
        (f"charframe prepare, fresh (median of {len(fresh)})", fresh_sorted[len(fresh) // 2]),
        ("charframe prepare, rerun (unchanged)", rerun),
    ]
    print(f"{'method':44s} {'seconds':>8s} {'images/s':>10s} {'speed-up':>9s}")
    for name, sec in rows:
        print(f"{name:44s} {sec:8.2f} {n_images / sec:10.0f} {naive / sec:8.1f}x")
    print("fresh runs: " + ", ".join(f"{t:.2f} s" for t in fresh) + " (file creation time depends on other disk activity)")
    median = fresh_sorted[len(fresh) // 2]
    print(f"target: fresh charframe prepare < 5 s: {'met' if median < 5 else 'NOT met'} (median {median:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
