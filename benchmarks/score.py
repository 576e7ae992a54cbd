"""Benchmark: identity scoring (issue 22) — CCIP throughput, and the score step's cost as a share of training.

    python benchmarks/score.py             # both parts (about 1.5-3 minutes on 2 cores)
    python benchmarks/score.py --only ccip # throughput only
    python benchmarks/score.py --real ccip-caformer-24-randaug-pruned   # the real model too (from the HF cache)

1. CCIP throughput on CPU, 64 synthetic 256 px figures: charframe's `models.ccip.Scorer` (imgutils' loading and
   preprocessing, batches of 16, features cached per picture content) against imgutils' own public API on the
   same files (`ccip_batch_extract_features` over the whole list, and the naive `ccip_extract_feature` one picture
   at a time), for the tiny CCIP-signature models of `charframe.testing.tiny_ccip` and, with `--real`, a real
   model found in the Hugging Face cache (nothing is downloaded). "rerun" = the same pictures again: every
   feature comes from the cache. The feature vectors are checked equal to imgutils'. The same for the prompt-
   adherence tagger (`models.tagger`, the tiny WD14-signature model of `charframe.testing.tiny_tagger`) against
   imgutils' `get_wd14_tags`.
2. The score step's share: a one-character project (tiny random SD model, face stage) with the shipped settings
   — the five `[preview]` scenes and the three `[score] codes` at one seed: 8 pictures per checkpoint, at the tiny
   model's 64 px and 2 sampling steps — trained for `--steps` steps (default 1000, the typical face recipe) with
   a checkpoint every `--every` (default 100: ten checkpoints), then the score step (each checkpoint drawn and
   scored with the tiny histogram CCIP model), both timed as the pipeline runs them (its summary rows). Target:
   score ≤ 10 % of train. The share is the scoring cost per checkpoint over the training cost between checkpoints,
   so it is also printed for other checkpoint intervals, and as the interval from which it holds. The score step
   records the same share from its own timings (`<name>-score/cost.toml`: what a user's log and report show for a
   real model).
   Wall-clock figures on a shared machine swing with its load (tiny tensors on 2 busy cores: up to 50x), so
   compare the two rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "pipeline")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see --threads


def _pictures(folder: Path, n: int) -> list[Path]:
    from charframe.cleaning.images import write_png
    from charframe.testing.figures import compose_figure, figure_mask

    out = []
    for i in range(n):
        cover = figure_mask((256, 256), shift=(0.02 * (i % 7) - 0.06, 0.0), scale=0.9 + 0.02 * (i % 5))
        hair = (30 + 20 * (i % 3), 25, 35 + 40 * (i % 2))
        path = folder / f"p{i:03d}.png"
        write_png(path, compose_figure(cover, hair=hair, background=(0, 0, 0), seed=i))
        out.append(path)
    return out


def ccip_rows(work: Path, n: int, real: str | None) -> list[tuple[str, str, float, str]]:
    import numpy as np
    from huggingface_hub import constants

    from charframe.models import ccip
    from charframe.testing import tiny_ccip

    pictures = _pictures(work / "pics", n)
    models = []
    for kind in ("histogram", "random"):
        tiny_ccip.write_hf_cache(work / "hf", f"bench-{kind}", kind)
        models.append((f"tiny {kind}", f"bench-{kind}", str(work / "hf")))
    if real:
        models.append((f"real {real}", real, constants.HF_HUB_CACHE))
    rows = []
    for label, name, cache in models:
        constants.HF_HUB_CACHE = cache
        from imgutils.metrics.ccip import ccip_batch_extract_features, ccip_extract_feature

        model = ccip.locate(name)
        scorer = ccip.Scorer(model, cache=work / "features" / name)
        scorer.features(pictures[:2])  # open the sessions (and warm up) outside the timing
        ccip_batch_extract_features([str(p) for p in pictures[:2]], model=name)
        t = time.perf_counter()
        ours = ccip.Scorer(model, cache=work / "features2" / name).features(pictures)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        ccip.Scorer(model, cache=work / "features2" / name).features(pictures)
        warm = time.perf_counter() - t
        t = time.perf_counter()
        theirs = ccip_batch_extract_features([str(p) for p in pictures], model=name)
        batch = time.perf_counter() - t
        k = min(n, 16)
        t = time.perf_counter()
        for p in pictures[:k]:
            ccip_extract_feature(str(p), model=name)
        naive = (time.perf_counter() - t) * n / k
        same = "equal" if np.array_equal(ours, theirs) else f"max diff {np.abs(ours - theirs).max():.2e}"
        rows += [(label, "charframe Scorer, first run", n / cold, same),
                 (label, "charframe Scorer, rerun (cache)", n / warm, ""),
                 (label, "imgutils ccip_batch_extract_features", n / batch, ""),
                 (label, f"imgutils ccip_extract_feature one by one ({k} timed)", n / naive, "")]
    return rows


def tagger_rows(work: Path, n: int) -> list[tuple[str, str, float, str]]:
    """The tiny WD14-signature tagger: charframe's `Tagger` (cold, then from its cache) vs imgutils' get_wd14_tags."""
    import numpy as np
    from huggingface_hub import constants
    from imgutils.tagging.wd14 import get_wd14_tags

    from charframe.models import tagger
    from charframe.testing import tiny_tagger

    pictures = _pictures(work / "pics", n)
    tiny_tagger.write_hf_cache(work / "hf-tagger", "SwinV2_v3")
    constants.HF_HUB_CACHE = str(work / "hf-tagger")
    model = tagger.locate("SwinV2_v3")
    tagger.Tagger(model, cache=work / "tags0").predictions(pictures[:2])  # open the session outside the timing
    get_wd14_tags(str(pictures[0]), model_name="SwinV2_v3")
    t = time.perf_counter()
    ours = tagger.Tagger(model, cache=work / "tags").predictions(pictures)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    tagger.Tagger(model, cache=work / "tags").predictions(pictures)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    theirs = np.stack([get_wd14_tags(str(p), model_name="SwinV2_v3", fmt="prediction") for p in pictures])
    lib = time.perf_counter() - t
    same = "equal" if np.array_equal(ours, theirs) else f"max diff {np.abs(ours - theirs).max():.2e}"
    return [("tiny WD14 tagger", "charframe Tagger, first run", n / cold, same),
            ("tiny WD14 tagger", "charframe Tagger, rerun (cache)", n / warm, ""),
            ("tiny WD14 tagger", "imgutils get_wd14_tags one by one", n / lib, "")]


def share_rows(work: Path, steps: int, every: int, threads: int) -> tuple[list[tuple[str, float]], str]:
    import torch

    from charframe.pipeline.runner import Options, run_target
    from charframe.testing import tiny_ccip
    from project_builder import make_project

    torch.set_num_threads(threads)
    root = make_project(work / "proj")
    (root / "charframe.toml").write_text("", encoding="utf-8")  # the shipped [preview] and [score] settings
    char = root / "Characters" / "krnk.toml"
    text = char.read_text(encoding="utf-8").replace("steps = 6\n", f"steps = {steps}\nsave_every = {every}\n", 1)
    char.write_text(text, encoding="utf-8")
    tiny_ccip.write_folder(root / "models" / "ccip", "histogram", 0.1)
    with open(root / "charframe.toml", "a", encoding="utf-8") as f:
        f.write('[identity]\nmodel = "models/ccip"\n')
    _, report = run_target(char, Options(stage="face", progress=False))
    failed = [(r.step, r.message) for r in report.failed]
    if failed:
        raise SystemExit(f"the pipeline failed: {failed}")
    from charframe.pipeline.score_file import cost_line, cost_path, read_cost, read_score, score_path
    from charframe.pipeline.stages import target_jobs

    job = target_jobs(char, "face")[0]
    steps = [x.step for x in read_score(score_path(job)).steps]
    return [(r.step, r.seconds) for r in report.results if r.status == "ran"], cost_line(read_cost(cost_path(job)), steps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("ccip", "share"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the share run (default 1000)")
    ap.add_argument("--every", type=int, default=100, help="a checkpoint every N steps (default 100)")
    ap.add_argument("--real", metavar="MODEL", help="also time a real CCIP model from the Hugging Face cache")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for training and rendering (default 1: the tiny model's tensors are too small "
                         "to gain from more, and on a shared machine 2 threads can be 50x slower from contention)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cf-score-bench-"))
    os.environ.setdefault("CHARFRAME_CACHE_DIR", str(work / "cache"))
    try:
        if args.only in (None, "ccip"):
            print(f"CCIP features, {args.images} pictures of 256 px, CPU ({os.cpu_count()} cores)")
            print(f"{'model':<22} {'method':<52} {'images/s':>9}  check")
            for label, method, rate, check in ccip_rows(work, args.images, args.real) + tagger_rows(work, args.images):
                print(f"{label:<22} {method:<52} {rate:>9.1f}  {check}")
        if args.only in (None, "share"):
            found, recorded = share_rows(work, args.steps, args.every, args.threads)
            rows = dict(found)
            train, score = rows.get("train", 0.0), rows.get("score", 0.0)
            n = args.steps // args.every + (args.steps % args.every != 0)
            print(f"\nscore step vs training, tiny model, {args.steps} steps, {n} checkpoints scored, "
                  f"{args.threads} torch thread(s)")
            for step in ("train", "score", "merge", "compress", "preview"):
                print(f"  {step:<9} {rows.get(step, 0.0):7.1f} s")
            print(f"  score / train = {100 * score / train:.1f} %  (target ≤ 10 %)")
            per_ckpt, per_step = score / n, train / args.steps  # fixed costs (base model load, report) included
            print(f"  per checkpoint {per_ckpt:.2f} s, per training step {per_step:.3f} s: the score step stays "
                  f"≤ 10 % of training with a checkpoint every ≥ {per_ckpt / (0.1 * per_step):.0f} steps")
            print("  share by checkpoint interval: " + ", ".join(
                f"every {k}: {100 * per_ckpt / (k * per_step):.1f} %" for k in (25, 50, 100, 200, 500)))
            print(f"  the score step's own account: {recorded}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
