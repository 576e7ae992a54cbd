"""The dataset TOML read with the meaning sd-scripts gives it, so both engines train on the same data.

- values ascend: a subset key overrides its `[[datasets]]` block, which overrides `[general]`;
  defaults are sd-scripts' (caption_extension `.caption`, batch_size 1, buckets off, 256..1024 in 64 px);
- every image of a subset is seen `num_repeats` times per epoch; a missing caption file falls back
  to the subset's `class_tokens`;
- `enable_bucket`: images go to aspect-ratio buckets (multiples of `bucket_reso_steps`) whose area is at
  most the resolution's; with `bucket_no_upscale` each image keeps its size (only shrunk to that area)
  and is cropped to the 64 px grid; without buckets every image is scaled to cover `resolution` and
  centre-cropped;
- `alpha_mask` subsets weight each pixel's loss by the image's alpha channel (sd-scripts' masked loss;
  images without alpha count as opaque);
- `is_reg` subsets are regularisation images, repeated so that their count matches the training
  images (extra ones unused), their loss weighted by prior_loss_weight;
- each epoch the images of a bucket are shuffled, cut into batches, and all batches shuffled, from the
  seed and the epoch number alone (so a resumed run sees the same order).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charframe.dataset.imagesize import image_size
from charframe.dataset.naming import IMAGE_EXTENSIONS
from charframe.dataset.schema import IGNORED_KEYS, Subset, ignored_keys_set, read_dataset_file, resolution_pair
from charframe.errors import CharframeError
from charframe.util.schema import dump

log = logging.getLogger(__name__)

#: Keys a subset may carry, and any level above it may set for all subsets below (with defaults).
SUBSET_DEFAULTS: dict[str, Any] = {
    "num_repeats": 1,
    "caption_extension": ".caption",
    "class_tokens": None,
    "flip_aug": False,
    "color_aug": False,
    "random_crop": False,
    "shuffle_caption": False,
    "keep_tokens": 0,
    "caption_prefix": None,
    "caption_suffix": None,
    "alpha_mask": False,
}
#: Keys a dataset block (or [general]) may set.
DATASET_DEFAULTS: dict[str, Any] = {
    "resolution": None,
    "batch_size": 1,
    "enable_bucket": False,
    "bucket_no_upscale": False,
    "min_bucket_reso": 256,
    "max_bucket_reso": 1024,
    "bucket_reso_steps": 64,
}


@dataclass
class TrainingSubset:
    """A subset as trained: every value resolved (inherited or sd-scripts' default), the folder found."""

    image_dir: Path
    num_repeats: int
    is_reg: bool
    class_tokens: str | None
    caption_extension: str
    flip_aug: bool
    color_aug: bool
    random_crop: bool
    shuffle_caption: bool
    keep_tokens: int
    caption_prefix: str | None
    caption_suffix: str | None
    alpha_mask: bool = False
    img_count: int = 0


@dataclass
class ImageEntry:
    path: Path
    caption: str
    size: tuple[int, int]  # (width, height) of the file
    resized: tuple[int, int]  # size after scaling, before the crop to `bucket`
    bucket: tuple[int, int]
    subset: int  # index into its dataset's subsets
    is_reg: bool
    repeats: int


@dataclass
class TrainingDataset:
    """A `[[datasets]]` block as trained: resolved values, its subsets, images and buckets."""

    resolution: tuple[int, int]
    batch_size: int
    enable_bucket: bool
    bucket_no_upscale: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    subsets: list[TrainingSubset] = field(default_factory=list)
    images: list[ImageEntry] = field(default_factory=list)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def num_train_images(self) -> int:
        return sum(s.num_repeats * s.img_count for s in self.subsets if not s.is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(s.num_repeats * s.img_count for s in self.subsets if s.is_reg)

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        """Bucket resolution → image indices, each listed `repeats` times; sorted by resolution."""
        out: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(self.images):
            out.setdefault(img.bucket, []).extend([i] * img.repeats)
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class BatchRef:
    """One batch of one epoch: which dataset, which images (same bucket)."""

    dataset: int
    images: tuple[int, ...]
    bucket: tuple[int, int]


@dataclass
class DatasetGroup:
    source: Path
    datasets: list[TrainingDataset]

    @property
    def num_train_images(self) -> int:
        return sum(d.num_train_images for d in self.datasets)

    @property
    def num_reg_images(self) -> int:
        return sum(d.num_reg_images for d in self.datasets)

    def epoch_batches(self, seed: int, epoch: int) -> list[BatchRef]:
        """The batches of `epoch` in training order; a function of (seed, epoch) only."""
        rng = np.random.default_rng([int(seed), int(epoch)])
        batches: list[BatchRef] = []
        for d_index, dataset in enumerate(self.datasets):
            for reso, items in dataset.buckets().items():
                order = [items[i] for i in rng.permutation(len(items))]
                for start in range(0, len(order), dataset.batch_size):
                    batches.append(BatchRef(d_index, tuple(order[start : start + dataset.batch_size]), reso))
        return [batches[i] for i in rng.permutation(len(batches))]

    def batches_per_epoch(self) -> int:
        return sum(math.ceil(len(v) / d.batch_size) for d in self.datasets for v in d.buckets().values())

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {}
        for d in self.datasets:
            for name, freq in d.tag_frequency.items():
                merged.setdefault(name, freq)
        return merged

    def dataset_dirs(self, reg: bool = False) -> dict[str, dict[str, int]]:
        """`{dir name: {"n_repeats", "img_count"}}` of training (or reg) subsets, as sd-scripts records."""
        out: dict[str, dict[str, int]] = {}
        for d in self.datasets:
            for s in d.subsets:
                if s.is_reg != reg:
                    continue
                name, n = s.image_dir.name, 2
                while name in out:
                    name, n = f"{s.image_dir.name} ({n})", n + 1
                out[name] = {"n_repeats": s.num_repeats, "img_count": s.img_count}
        return out


# --- buckets --------------------------------------------------------------------------------------


def bucket_resolutions(max_reso: tuple[int, int], min_size: int = 256, max_size: int = 1024, step: int = 64) -> list[tuple[int, int]]:
    """The predefined buckets: every (w, h) on the step grid within [min, max] whose area fits max_reso."""
    area = max_reso[0] * max_reso[1]
    side = int(math.sqrt(area) // step) * step
    resos = {(side, side)}
    for w in range(min_size, max_size + 1, step):
        h = min(max_size, int((area // w) // step) * step)
        if h >= min_size:
            resos.update({(w, h), (h, w)})
    return sorted(resos)


def _floor_step(x: float, step: int) -> int:
    x = int(x + 0.5)
    return x - x % step


def select_bucket(
    size: tuple[int, int], predefined: list[tuple[int, int]] | None, max_area: int, step: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(bucket, resized size) for an image. `predefined=None` means bucket_no_upscale."""
    w, h = size
    ar = w / h
    if predefined is not None:
        reso = size if size in predefined else min(predefined, key=lambda r: abs(r[0] / r[1] - ar))
        scale = reso[1] / h if ar > reso[0] / reso[1] else reso[0] / w
        return reso, (int(w * scale + 0.5), int(h * scale + 0.5))
    if w * h > max_area:
        rw = math.sqrt(max_area * ar)
        rh = max_area / rw
        bw = _floor_step(rw, step)
        bh_w = _floor_step(bw / ar, step)
        bh = _floor_step(rh, step)
        bw_h = _floor_step(bh * ar, step)
        err_w = abs(bw / bh_w - ar) if bh_w else math.inf
        err_h = abs(bw_h / bh - ar) if bh else math.inf
        resized = (bw, int(bw / ar + 0.5)) if err_w < err_h else (int(bh * ar + 0.5), bh)
    else:
        resized = (w, h)
    return (resized[0] - resized[0] % step, resized[1] - resized[1] % step), resized


# --- reading the TOML -----------------------------------------------------------------------------


def resolve_image_dir(raw: str, toml_path: Path) -> Path:
    """image_dir as written; relative paths are tried from the TOML's folder, then the current one."""
    text = raw.replace("\\", "/") if os.sep == "/" else raw
    p = Path(text).expanduser()
    candidates = [p] if p.is_absolute() else [toml_path.parent / p, Path.cwd() / p]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise CharframeError(
        f"{toml_path}: image_dir {raw!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        "fix the path or run `charframe prepare` again"
    )


def _read_caption(image: Path, extension: str) -> str | None:
    cap = image.with_name(image.stem + extension)
    if not cap.is_file():
        return None
    lines = cap.read_text(encoding="utf-8-sig").splitlines()
    if not lines or not lines[0].strip():
        raise CharframeError(f"{cap}: caption file is empty; write a caption or delete the file")
    return lines[0].strip()


def _values(record: Any, where: str, path: Path) -> dict[str, Any]:
    """The keys a record sets (None = inherit), with a warning for sd-scripts-only keys."""
    ignored = ignored_keys_set(record)
    if ignored:
        log.warning("%s: %s in %s ignored by the built-in trainer", path, ", ".join(ignored), where)
    return {k: v for k, v in dump(record).items() if k not in IGNORED_KEYS and k != "subsets"}


def _register_reg_repeats(train_count: int, reg: list[tuple[ImageEntry, int]]) -> list[ImageEntry]:
    """sd-scripts' rule: reg images fill up to the number of training images (with repeats)."""
    used: list[ImageEntry] = []
    n, first = 0, True
    while n < train_count and reg:
        for entry, repeats in reg:
            if first:
                entry.repeats = repeats
                used.append(entry)
                n += repeats
            else:
                entry.repeats += 1
                n += 1
            if n >= train_count:
                break
        first = False
    return used


def _bucket_range(params: dict[str, Any], reso: tuple[int, int], path: Path, where: str) -> tuple[int, int, int]:
    """min/max bucket side and step, checked as sd-scripts checks them when bucketing is on: the
    limits snap outward to the step, and the resolution must lie between them (sd-scripts stops
    with an assertion otherwise, so a TOML that trains here also trains with the kohya engine)."""
    lo, hi, step = int(params["min_bucket_reso"]), int(params["max_bucket_reso"]), int(params["bucket_reso_steps"])
    if not params["enable_bucket"]:
        return lo, hi, step
    if lo % step or hi % step:
        snapped = (lo - lo % step, hi + (step - hi % step) % step)
        log.warning("%s: %s: min/max_bucket_reso %d/%d moved to multiples of %d: %d/%d", path, where, lo, hi, step, *snapped)
        lo, hi = snapped
    if min(reso) < lo:
        raise CharframeError(f"{path}: {where}: resolution {list(reso)} is below min_bucket_reso {lo}; "
                             f"add `min_bucket_reso = {min(reso) - min(reso) % step or step}` or raise the resolution")
    if max(reso) > hi:
        raise CharframeError(f"{path}: {where}: resolution {list(reso)} is above max_bucket_reso {hi}; "
                             f"add `max_bucket_reso = {max(reso)}` or lower the resolution")
    return lo, hi, step


def _build_dataset(params: dict[str, Any], subsets_cfg: list[Subset], path: Path, where: str) -> TrainingDataset:
    reso = resolution_pair(params["resolution"], f"{path}: {where}")
    if reso is None:
        raise CharframeError(f"{path}: {where} has no resolution; add `resolution = [512, 512]`")
    ds = TrainingDataset(reso, int(params["batch_size"]), bool(params["enable_bucket"]), bool(params["bucket_no_upscale"]),
                 *_bucket_range(params, reso, path, where))
    predefined = None
    if not ds.enable_bucket:
        predefined = [reso]
    elif not ds.bucket_no_upscale:
        predefined = bucket_resolutions(reso, ds.min_bucket_reso, ds.max_bucket_reso, ds.bucket_reso_steps)
    step = ds.bucket_reso_steps if ds.enable_bucket else 8
    train: list[ImageEntry] = []
    reg: list[tuple[ImageEntry, int]] = []
    seen: set[Path] = set()
    for s_cfg in subsets_cfg:
        own = _values(s_cfg, f"a subset of {where}", path)
        values = {k: own.get(k, params.get(k)) for k in SUBSET_DEFAULTS}
        sub = TrainingSubset(image_dir=resolve_image_dir(s_cfg.image_dir, path), is_reg=bool(s_cfg.is_reg), **values)
        if sub.num_repeats < 1:
            log.warning("%s: subset %s ignored: num_repeats < 1", path, sub.image_dir)
            continue
        if sub.image_dir in seen:
            log.warning("%s: subset %s listed twice in %s; the first one is used", path, sub.image_dir, where)
            continue
        seen.add(sub.image_dir)
        files = sorted(p for p in sub.image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            log.warning("%s: subset %s ignored: no images", path, sub.image_dir)
            continue
        sub.img_count = len(files)
        index = len(ds.subsets)
        ds.subsets.append(sub)
        freq = ds.tag_frequency.setdefault(sub.image_dir.name, {})
        missing = 0
        for f in files:
            caption = _read_caption(f, sub.caption_extension)
            if caption is None:
                missing += 1
                caption = sub.class_tokens or ""
            for tag in (t.strip().lower() for t in caption.split(",")):
                if tag:
                    freq[tag] = freq.get(tag, 0) + 1
            size = image_size(f)
            bucket, resized = select_bucket(size, predefined, reso[0] * reso[1], step)
            if min(bucket) < step:
                raise CharframeError(f"{f}: {size[0]}x{size[1]} is too small for {step} px buckets; use a larger image")
            entry = ImageEntry(f, caption, size, resized, bucket, index, sub.is_reg, sub.num_repeats)
            (reg.append((entry, sub.num_repeats)) if sub.is_reg else train.append(entry))
        if missing:
            how = f"class_tokens {sub.class_tokens!r}" if sub.class_tokens else "an empty caption"
            log.warning("%s: %d image(s) without a %s caption use %s", sub.image_dir, missing, sub.caption_extension, how)
    ds.images = train + _register_reg_repeats(sum(e.repeats for e in train), reg)
    return ds


def load_dataset(path: str | os.PathLike) -> DatasetGroup:
    """Read a dataset TOML into images, captions and buckets (sd-scripts semantics, see module doc)."""
    path = Path(path).absolute()
    cfg = read_dataset_file(path)
    general = _values(cfg.general, "[general]", path)
    datasets: list[TrainingDataset] = []
    for i, d_cfg in enumerate(cfg.datasets):
        where = f"[[datasets]] #{i + 1}"
        params = {**DATASET_DEFAULTS, **SUBSET_DEFAULTS, **general, **_values(d_cfg, where, path)}
        ds = _build_dataset(params, list(d_cfg.subsets), path, where)
        if ds.images:
            datasets.append(ds)
    if not datasets:
        raise CharframeError(f"{path}: no training images found in any subset")
    group = DatasetGroup(path, datasets)
    log.info("%s: %d training images with repeats, %d reg images, %d batches per epoch",
             path.name, group.num_train_images, group.num_reg_images, group.batches_per_epoch())
    return group
