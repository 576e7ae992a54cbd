"""The sd-scripts dataset TOML of one dataset folder (CONVENTIONS §4), as typed data.

`LoRAInput/4_krnk/` → `LoRAInput/4_krnk/4_krnk.toml`: repeats from the folder name, one subset per
image folder below it, subsets grouped into one `[[datasets]]` block per size class, batch sizes
from a VRAM profile (`charframe/data/vram_profiles.toml`). The file is written by a small emitter
(values escaped by tomli-w) in the familiar sd-scripts layout, and parsed back before it is
written, so any folder name round-trips.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


from charframe.dataset.schema import Dataset, DatasetFile, General, Subset, parse_dataset_file, resolution_pair
from charframe.errors import CharframeError
from charframe.families.family import Family, get_family
from charframe.util import toml as tomlio
from charframe.util.schema import dump
from charframe.util.files import DATA_DIR, atomic_write_text, backup_file, check_name_length
from charframe.dataset.imagesize import image_size
from charframe.dataset.naming import is_image_name, parse_dataset_name, parse_subset_name
from charframe.project import SIZE_CLASS_NAMES, VramProfile, find_project_root, load_project, parse_project_config
from charframe.util.schema import Source
from charframe.dataset.scan import ImageFolder, image_folders

log = logging.getLogger(__name__)

VRAM_FILE = DATA_DIR / "vram_profiles.toml"
FAMILIES_FILE_HINT = str(DATA_DIR / "families") + "/"
VRAM_SECTION = "vram_profiles"
#: Size classes: (name, largest side in px, training resolution). A side above every limit is HIGH.
SIZE_CLASSES = (("LOW", 512, 512), ("MID", 768, 768), ("HIGH", None, 1024))
CLASS_NAMES = SIZE_CLASS_NAMES  # WIDTH_HEIGHT, from SIZE_CLASSES
_MAX_LISTED = 10


#: The keys `charframe toml` writes, per level, in the order it writes them.
WRITTEN_KEYS = {
    "general": ("color_aug", "enable_bucket", "bucket_no_upscale", "caption_extension", "num_repeats",
                "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"),
    "datasets": ("resolution", "batch_size", "subsets"),
    "subsets": ("image_dir", "class_tokens", "flip_aug", "is_reg", "alpha_mask"),
}


def conventional_general(repeats: int, family: str | Family | None = None) -> General:
    """`[general]` as the convention writes it (§4), plus the model family's bucketing (`[dataset.general]` of
    `data/families/<id>.toml`: SDXL's buckets reach 2048 px on their longer side; SD1.x adds nothing)."""
    extra = get_family(family).data.get("dataset", {}).get("general", {})
    return General(color_aug=True, enable_bucket=True, bucket_no_upscale=True, caption_extension=".txt",
                   num_repeats=repeats, **extra)


@dataclass(frozen=True)
class DatasetConfig(DatasetFile):
    """The dataset TOML `charframe toml` writes: the shared records, emitted in the sd-scripts layout."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data as sd-scripts reads it (the inverse of `from_dict`)."""
        return {
            "general": _written(self.general, "general"),
            "datasets": [
                {**_written(d, "datasets"), "subsets": [_written(s, "subsets") for s in d.subsets]}
                for d in self.datasets
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetConfig:
        """Typed config from parsed TOML; keys this writer does not write are an error (they would be lost)."""
        record = parse_dataset_file(data, "dataset TOML")
        levels = [("general", record.general)] + [("datasets", d) for d in record.datasets] + \
                 [("subsets", s) for d in record.datasets for s in d.subsets]
        for level, rec in levels:
            extra = sorted(k for k, v in dump(rec).items() if k not in WRITTEN_KEYS[level])
            if extra:
                raise CharframeError(f"dataset TOML: key(s) {', '.join(extra)} in [{level}] are not written by "
                                     "`charframe toml` (they would be lost)")
        datasets = tuple(replace(d, resolution=resolution_pair(d.resolution, "dataset TOML")) for d in record.datasets)
        return cls(record.general, datasets)

    def dumps(self, header: str = "") -> str:
        """TOML text in the sd-scripts layout; parsed back and compared before it is returned."""
        lines = [f"# {line}" if line else "#" for line in header.splitlines()] + ([""] if header else [])
        data = self.to_dict()
        lines += ["[general]"] + [f"{k} = {_value(v)}" for k, v in data["general"].items()]
        for d in data["datasets"]:
            lines += ["", "[[datasets]]", f"resolution = {_value(d['resolution'])}", f"batch_size = {d['batch_size']}"]
            for s in d["subsets"]:
                lines += ["", "  [[datasets.subsets]]"] + [f"  {k} = {_value(v)}" for k, v in s.items()]
        text = "\n".join(lines) + "\n"
        if DatasetConfig.from_dict(tomlio.loads(text)) != self:  # pragma: no cover - emitter bug guard
            raise AssertionError("dataset TOML did not round-trip")
        return text


def _written(record: Any, level: str) -> dict[str, Any]:
    """The record's written keys that are set, in the written order (tuples as lists)."""
    values = dump(record)
    return {k: values[k] for k in WRITTEN_KEYS[level] if k in values and k != "subsets"}


_PLAIN = re.compile(r"[^'\x00-\x1f\x7f]*")


def _value(v: Any) -> str:
    """One TOML value: literal 'strings' where possible (Windows paths stay readable)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, str) and _PLAIN.fullmatch(v):
        return f"'{v}'"
    return tomlio.value(v)


def size_class(side: int) -> str:
    for name, limit, _ in SIZE_CLASSES:
        if limit is None or side <= limit:
            return name
    raise AssertionError("unreachable")


def resolution_of(class_name: str) -> tuple[int, int]:
    res = {name: r for name, _, r in SIZE_CLASSES}
    w, h = class_name.split("_")
    return res[w], res[h]


def load_vram_profiles(project_root: str | os.PathLike | None = None,
                       family: str | Family | None = None) -> dict[str, VramProfile]:
    """Shipped profiles (the model family's own `[vram_profiles]` where it has them: SDXL needs more memory per
    pixel) plus `[vram_profiles.NAME]` tables of the project's charframe.toml (validated there)."""
    fam = get_family(family)
    if "vram_profiles" in fam.data:
        source, data = f"{FAMILIES_FILE_HINT}{fam.id}.toml", fam.data["vram_profiles"]
        shipped = parse_project_config({VRAM_SECTION: data}, Source(source)).vram_profiles
    else:
        data, text = tomlio.read(VRAM_FILE)
        shipped = parse_project_config({VRAM_SECTION: data}, Source(str(VRAM_FILE), text)).vram_profiles
    extra = load_project(project_root).vram_profiles if project_root is not None else {}
    return {**shipped, **extra}


def batch_sizes(vram: str, project_root: str | os.PathLike | None = None,
                family: str | Family | None = None) -> dict[str, int]:
    """Batch size per class for a profile name (`default`, `12gb`; `12` and `12GB` work too)."""
    profiles = load_vram_profiles(project_root, family)
    key = vram.strip().lower()
    key = f"{key}gb" if key.isdigit() else key
    if key not in profiles:
        raise CharframeError(f"unknown VRAM profile {vram!r}; known: {', '.join(profiles)}", param="vram")
    return profiles[key].batch_sizes()


def _classify(folder: ImageFolder, sizes: list[tuple[int, int]]) -> tuple[str | None, str]:
    """The single size class of a folder, or (None, message naming every offending file)."""
    groups: dict[str, list[int]] = {}
    for i, (w, h) in enumerate(sizes):
        groups.setdefault(f"{size_class(w)}_{size_class(h)}", []).append(i)
    if len(groups) == 1:
        return next(iter(groups)), ""
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    lines = [f"{folder.path}: images fall in {len(groups)} size classes (each side <=512 LOW, <=768 MID, else HIGH); one folder must hold one class:"]
    for n, (cls, idx) in enumerate(ranked):
        shown = idx[:1] if n == 0 else idx[:_MAX_LISTED]
        label = f"  {cls} ({len(idx)} image{'s' * (len(idx) != 1)})" + (", e.g." if n == 0 and len(idx) > 1 else ":")
        lines.append(label + " " + ", ".join(f"{folder.images[i]} {sizes[i][0]}x{sizes[i][1]}" for i in shown) + (f" and {len(idx) - len(shown)} more" if n and len(idx) > len(shown) else ""))
    lines.append("  resize the odd images or move them to their own folder")
    return None, "\n".join(lines)


def _folder_sizes(folder: ImageFolder) -> list[tuple[int, int]] | str:
    try:
        return [image_size(folder.path / name) for name in folder.images]
    except CharframeError as e:
        return str(e)


def build_dataset_config(
    dataset_dir: str | os.PathLike,
    *,
    vram: str = "default",
    relative_to: str | os.PathLike | None = None,
    folders: list[ImageFolder] | None = None,
    family: str | Family | None = None,
) -> DatasetConfig:
    """The config of one dataset folder for a model family (SD1.x by default: its batch sizes and bucketing);
    every problem found is reported in one CharframeError."""
    root = Path(dataset_dir)
    check_relative_to(relative_to)
    check_name_length(toml_path(root), "its TOML is named after the dataset folder: shorten the folder's name")
    dataset = parse_dataset_name(root.absolute())
    if not dataset.has_repeats:
        log.warning("%s: the folder name has no repeats prefix (N_name, e.g. 4_krnk); num_repeats = 1", root)
    batches = batch_sizes(vram, find_project_root(root), family)
    folders = image_folders(root) if folders is None else folders
    subsets = [f for f in folders if f.path != root]
    if len(subsets) < len(folders):
        log.warning("%s: images directly in the dataset folder are in no subset; move them into a subset folder such as %s", root, root / "krnk girl_f0512")
    if not subsets:
        raise CharframeError(f"{root}: empty dataset: no png/jpg/jpeg/webp images in any folder below it (expected e.g. {root / 'krnk girl_f0512' / 'f00.png'})")
    with ThreadPoolExecutor(max_workers=4) as pool:  # header reads are I/O: overlap them
        all_sizes = list(pool.map(_folder_sizes, subsets))
    problems: list[str] = []
    by_class: dict[str, list[Subset]] = {}
    for folder, sizes in zip(subsets, all_sizes):
        if isinstance(sizes, str):
            problems.append(sizes)
            continue
        cls, message = _classify(folder, sizes)
        if cls is None:
            problems.append(message)
            continue
        try:
            name = parse_subset_name(folder.path)
        except CharframeError as e:
            problems.append(f"{folder.path}: {e}")
            continue
        by_class.setdefault(cls, []).append(Subset(_image_dir(folder.path, relative_to), name.class_tokens, name.flip_aug,
                                                  name.is_reg or None, alpha_mask=name.alpha_mask or None))
    if problems:
        raise CharframeError("\n".join(problems) + f"\nno TOML written for {root}")
    datasets = tuple(Dataset(resolution_of(c), batches[c], tuple(by_class[c])) for c in CLASS_NAMES if c in by_class)
    return DatasetConfig(conventional_general(dataset.repeats, family), datasets)


def check_relative_to(relative_to: str | os.PathLike | None) -> None:
    """The folder image paths are written relative to must exist (a typo would write paths that lead nowhere)."""
    if relative_to is None:
        return
    path = Path(relative_to)
    if not path.exists():
        raise CharframeError(f"{{param}} {path}: no such folder (image_dir paths would lead nowhere)", param="relative_to")
    if not path.is_dir():
        raise CharframeError(f"{{param}} {path}: is a file, but a folder is expected", param="relative_to")


def _image_dir(path: Path, relative_to: str | os.PathLike | None) -> str:
    absolute = os.path.abspath(path)
    if relative_to is None:
        return absolute
    try:
        return os.path.relpath(absolute, os.path.abspath(relative_to))
    except ValueError:  # Windows: another drive
        raise CharframeError(f"{path}: cannot be written relative to {relative_to} (another drive); drop {{param}}", param="relative_to") from None


def toml_path(dataset_dir: str | os.PathLike) -> Path:
    """`LoRAInput/4_krnk` → `LoRAInput/4_krnk/4_krnk.toml`."""
    root = Path(dataset_dir)
    return root / f"{root.absolute().name}.toml"


HEADER = "sd-scripts dataset config written by `charframe toml` from folder names and image sizes.\nRename folders and rerun rather than editing this file."


def render_dataset_toml(config: DatasetConfig) -> str:
    return config.dumps(HEADER)


def save_dataset_toml(dataset_dir: str | os.PathLike, text: str) -> Path:
    """Write atomically; a different existing file (perhaps hand-edited) is backed up first."""
    path = toml_path(dataset_dir)
    if path.is_file():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            log.info("%s: unchanged", path)
            return path
        log.warning("%s: replaced; the previous version is kept as %s", path, backup_file(path).name)
    atomic_write_text(path, text, parents=False)
    log.info("%s: written", path)
    return path


def write_dataset_toml(dataset_dir: str | os.PathLike, *, vram: str = "default", relative_to: str | os.PathLike | None = None,
                       family: str | Family | None = None) -> Path:
    """Build and write `<dataset_dir>/<name>.toml`; on any error nothing is written."""
    config = build_dataset_config(dataset_dir, vram=vram, relative_to=relative_to, family=family)
    return save_dataset_toml(dataset_dir, render_dataset_toml(config))


def dataset_dirs(dirs: list[str | os.PathLike]) -> list[Path]:
    """The dataset folders meant by `dirs`: a folder such as `LoRAInput` (no `N_` prefix, no images
    of its own, children named `N_name`) stands for those children."""
    out: list[Path] = []
    for d in map(Path, dirs):
        entries = [e for e in os.scandir(d) if not e.name.startswith(".")]
        children = sorted(Path(e.path) for e in entries if e.is_dir() and parse_dataset_name(e.name).has_repeats)
        own_images = any(is_image_name(e.name) for e in entries if e.is_file())
        if children and not own_images and not parse_dataset_name(d.absolute()).has_repeats:
            log.info("%s: holds %d dataset folders (N_name); one TOML each", d, len(children))
            out += children
        else:
            out.append(d)
    return out


def write_dataset_tomls(dirs: list[str | os.PathLike], *, vram: str = "default", relative_to: str | os.PathLike | None = None,
                        family: str | Family | None = None) -> list[Path]:
    """Several datasets: all are checked before the first file is written."""
    texts = [(d, render_dataset_toml(build_dataset_config(d, vram=vram, relative_to=relative_to, family=family))) for d in dirs]
    return [save_dataset_toml(d, t) for d, t in texts]
