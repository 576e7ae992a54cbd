"""Multi-size export (CONVENTIONS §4): the picked, cleaned images of one set → sibling subset folders.

`LoRAWork/krnk/face/clean/f12-2.png` (picked for f12) → `LoRAInput/4_krnk/krnk girl_f0512/f12.png` (the
project's input folder: `[paths] input` of charframe.toml honoured),
`… krnk girl_f0768/f12.png`: the longer side becomes the size, by area averaging; a size above the source is
skipped (never upscaled), and so is a size whose shorter side would fall under the 64 px training bucket (a body
picture 1:2 at 64 px), each with one note per set. With `alpha_mask` the transparent copies go to
`krnk girl_alpha_f0512/` as well (sd-scripts' `alpha_mask = true` in the dataset TOML).

The dataset follows the picks and the settings exactly (one record per file, `util.manifest.decide`): an image
made from another pick, size or source is replaced; the images of a code no longer picked (or listed in
`[export] exclude`), of a size no longer asked for, or of a pick too small for every size, leave the dataset —
moved to `LoRAWork/replaced/`, never deleted — and empty subset folders go with them. The dataset is the user's
too: an image retouched by hand, or deleted by hand, stays so while its pick and settings are unchanged (a
deletion is honoured; `exclude` makes it permanent); one placed there by hand is never touched.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import cv2
import numpy as np

from charframe.character import Character
from charframe.cleaning.images import candidates, read_image, write_png
from charframe.cleaning.pick import PICKS_FILE, read_picks
from charframe.dataset.naming import ALPHA_MARKER, with_marker
from charframe.errors import CharframeError
from charframe.project import project_dirs
from charframe.util.manifest import Manifest, decide
from charframe.util.recycle import Recycler, remove_empty_dirs
from charframe.util.paths import contained

log = logging.getLogger(__name__)

MANIFEST = ".charframe-export.json"
#: the smallest side an exported image may have: sd-scripts' bucket step (a side under it has no bucket)
MIN_SIDE = 64


def set_kind(character: Character, set_name: str) -> tuple[str, str]:
    """("f", "") for "face", ("b", outfit) for "body-<outfit>"."""
    if set_name == "face":
        return "f", ""
    prefix, _, outfit = set_name.partition("-")
    if prefix != "body" or not outfit:
        raise CharframeError(f"unknown image set {set_name!r}: face or body-<outfit>", param="set_name")
    character.outfit_prompt(outfit)
    return "b", outfit


def resize_longer(img: np.ndarray, size: int) -> np.ndarray | None:
    """`img` with its longer side `size` (area averaging); the image itself at its own size; None above it."""
    h, w = img.shape[:2]
    if size > max(h, w):
        return None
    if size == max(h, w):
        return img
    k = size / max(h, w)
    return cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def check_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if not sizes or any(not isinstance(s, int) or s < 64 or s > 4096 or s % 8 for s in sizes):
        raise CharframeError(f"{{param}} must be multiples of 8 from 64 to 4096, got {list(sizes)}", param="sizes")
    return tuple(sorted(set(sizes)))


def _set_prefix(character: Character, kind: str, outfit: str) -> str:
    """What every subset folder of this set starts with (`krnksf girl_`), for records made before sets were tagged."""
    return character.subset(kind, 1, outfit).rsplit("_", 1)[0] + "_"


def _ours(manifest: Manifest, name: str, tag: str, prefix: str) -> bool:
    entry = manifest.outputs.get(name) or {}
    return entry.get("set") == tag or ("set" not in entry and name.startswith(prefix))


def _retire(manifest: Manifest, wanted: set[str], tag: str, prefix: str, recycler: Recycler) -> list[str]:
    """Move this set's recorded images that are no longer wanted out of the dataset; returns their names."""
    gone, folders = [], set()
    for name in [n for n in manifest.names() if n not in wanted and _ours(manifest, n, tag, prefix)]:
        path = manifest.folder / name
        if path.is_file() and manifest.check(name).file == "ours":
            recycler.recycle(path)
            for caption in path.parent.glob(glob.escape(path.stem) + ".*"):  # its caption goes with it
                if caption.suffix.lower() == ".txt":
                    recycler.recycle(caption)
            gone.append(name)
            folders.add(path.parent)
        manifest.forget(name)
    for folder in folders:  # a subset folder left with only bookkeeping (.charframe-captions.json) goes too
        rest = list(folder.iterdir()) if folder.is_dir() else []
        if rest and all(p.name.startswith(".") and p.is_file() for p in rest):
            for p in rest:
                p.unlink()
        remove_empty_dirs(folder, manifest.folder)
    return gone


def missing_pick(work: Path, folder: str, code: str, index: int) -> str:
    """The message for a pick whose cleaned file is not there: which candidates there are, or that the code has
    none (then cleaning is what is missing)."""
    found = candidates(work / folder).get(code, [])
    if found:
        return (f"{work / PICKS_FILE}: {code} = {index}, but {code} has candidate(s) {', '.join(map(str, found))} "
                f"in {work / folder}; pick one of those (charframe pick, or edit {PICKS_FILE})")
    return f"{work / PICKS_FILE}: {code} = {index}, but {work / folder} has no {code} candidates; run charframe clean again"


def export_set(character: Character, set_name: str, *, sizes: tuple[int, ...] | list[int] | None = None,
               alpha_mask: bool | None = None, dataset: str | None = None) -> list[Path]:
    """Export the picked candidates of `set_name` at every size; return the files written."""
    kind, outfit = set_kind(character, set_name)
    sizes = check_sizes(tuple(sizes) if sizes is not None else character.export.sizes)
    alpha_mask = character.export.alpha_mask if alpha_mask is None else alpha_mask
    dataset = dataset or (character.face_dataset() if kind == "f" else character.body_dataset(outfit))
    work = character.work_dir(set_name)
    picks = {c: i for c, i in read_picks(character, set_name).items() if c not in character.export.exclude}
    dirs = project_dirs(character.root)
    root = contained(dirs.input, dataset, what="dataset")
    manifest = Manifest.load(root / MANIFEST)
    recycler = dirs.recycler()
    prefix = _set_prefix(character, kind, outfit)
    tag = f"{character.keyword}/{set_name}"  # a group dataset holds the sets of several characters
    variants = [("clean", 3, "")] + ([("alpha", 4, ALPHA_MARKER)] if alpha_mask else [])
    written: list[Path] = []
    kept: list[str] = []
    notes: dict[str, list[str]] = {"upscale": [], "small": []}
    wanted: set[str] = set()
    try:
        for code, index in picks.items():
            if code[0] != kind:
                raise CharframeError(f"{work / 'picks.toml'}: {code} is not a {set_name} code")
            for folder, channels, marker in variants:
                src = work / folder / f"{code}-{index}.png"
                if not src.is_file():
                    raise CharframeError(missing_pick(work, folder, code, index))
                img = read_image(src, channels)
                for size in sizes:
                    out = resize_longer(img, size)
                    if out is None:
                        notes["upscale"].append(f"{size}px (source {max(img.shape[:2])}px)|{code}")
                        continue
                    if min(out.shape[:2]) < MIN_SIDE:
                        notes["small"].append(f"{size}px ({out.shape[1]}×{out.shape[0]})|{code}")
                        continue
                    subset = character.subset(kind, size, outfit)
                    name = f"{with_marker(subset, marker) if marker else subset}/{code}.png"
                    wanted.add(name)
                    params = {"size": size, "channels": channels}
                    action = decide(manifest.check(name, inputs=[src], params=params), keep_deleted=True)
                    if action == "keep":
                        kept.append(name)
                    if action in ("skip", "keep"):
                        continue
                    if action == "replace":
                        recycler.recycle(root / name)
                    data, st = write_png(root / name, out)
                    manifest.record(name, inputs=[src], params=params, data=data, stat=st)
                    manifest.outputs[name]["set"] = tag
                    written.append(root / name)
        gone = _retire(manifest, wanted, tag, prefix, recycler)
    finally:
        manifest.save()
    _report(root, f"{character.keyword} {set_name}", picks, sizes, written, kept, gone, notes, recycler)
    return written


def _report(root: Path, set_name: str, picks: dict[str, int], sizes: tuple[int, ...], written: list[Path],
            kept: list[str], gone: list[str], notes: dict[str, list[str]], recycler: Recycler) -> None:
    """One line per kind of news, each naming the character and set (a body or group dataset holds several sets).
    The sizes never upscaled are said when something was written, not again on every up-to-date export."""
    where = f"{root.name} ({set_name})"
    if notes["upscale"]:
        log.log(logging.INFO if written else logging.DEBUG, "%s: not upscaled, skipped: %s", where,
                _grouped(notes["upscale"]))
    if notes["small"]:
        log.warning("%s: skipped, shorter side under the %d px training bucket: %s", where, MIN_SIDE,
                    _grouped(notes["small"]))
    if kept:
        log.info("%s: %d image(s) retouched or deleted by hand kept as they are: %s", where, len(kept), _short(kept))
    if gone:
        log.info("%s: %d image(s) no longer picked or asked for moved to %s", where, len(gone), recycler.folder())
    log.info("%s: %d file(s) written for %d code(s) at %s px", where, len(written), len(picks),
             ", ".join(map(str, sizes)))


def _grouped(notes: list[str]) -> str:
    """"512px (source 128px)|f00" notes → `512px (source 128px): f00, f02` per distinct reason."""
    by: dict[str, list[str]] = {}
    for note in notes:
        what, _, code = note.partition("|")
        by.setdefault(what, [])
        if code not in by[what]:
            by[what].append(code)
    return "; ".join(f"{what}: {_short(codes)}" for what, codes in by.items())


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" … (+{len(items) - n})" if len(items) > n else "")
