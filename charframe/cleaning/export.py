"""Multi-size export (CONVENTIONS §4): the picked, cleaned images of one set → sibling subset folders.

`LoRAWork/krnk/face/clean/f12-2.png` (picked for f12) → `LoRAInput/4_krnk/krnk girl_f0512/f12.png` (the
project's input folder: `[paths] input` of charframe.toml honoured),
`… krnk girl_f0768/f12.png`: the longer side becomes the size, by area averaging; a size above the source is
skipped (never upscaled) with a note. With `alpha_mask` the transparent copies go to `krnk girl_alpha_f0512/`
as well (sd-scripts' `alpha_mask = true` in the dataset TOML). A file in the dataset that charframe did not
write, or that was edited since, is backed up (`f12.png.bak`) before it is replaced.
"""

from __future__ import annotations

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
from charframe.util.files import backup_file
from charframe.util.manifest import Manifest, Status
from charframe.util.paths import contained

log = logging.getLogger(__name__)

MANIFEST = ".charframe-export.json"


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


def missing_pick(work: Path, folder: str, code: str, index: int) -> str:
    """The message for a pick whose cleaned file is not there: which candidates there are, or that the code has
    none (then cleaning is what is missing)."""
    found = candidates(work / folder).get(code, [])
    if found:
        return (f"{work / PICKS_FILE}: {code} = {index}, but {code} has candidate(s) {', '.join(map(str, found))} "
                f"in {work / folder}; pick one of those (charframe pick, or edit {PICKS_FILE})")
    return f"{work / PICKS_FILE}: {code} = {index}, but {work / folder} has no {code} candidates; run charframe clean again"


def _write(manifest: Manifest, name: str, img: np.ndarray, src: Path, params: dict) -> Path | None:
    """Write one export unless up to date; back up a file charframe did not write (or that was edited)."""
    state = manifest.status(name, inputs=[src], params=params)
    if state is Status.UP_TO_DATE:
        return None
    dest = manifest.folder / name
    if state is Status.FOREIGN:
        log.warning("%s: not written by charframe (or edited since); kept as %s", dest, backup_file(dest).name)
    data, st = write_png(dest, img)
    manifest.record(name, inputs=[src], params=params, data=data, stat=st)
    return dest


def export_set(character: Character, set_name: str, *, sizes: tuple[int, ...] | list[int] | None = None,
               alpha_mask: bool | None = None, dataset: str | None = None) -> list[Path]:
    """Export the picked candidates of `set_name` at every size; return the files written."""
    kind, outfit = set_kind(character, set_name)
    sizes = check_sizes(tuple(sizes) if sizes is not None else character.export.sizes)
    alpha_mask = character.export.alpha_mask if alpha_mask is None else alpha_mask
    dataset = dataset or (character.face_dataset() if kind == "f" else character.body_dataset(outfit))
    work = character.work_dir(set_name)
    picks = read_picks(character, set_name)
    root = contained(project_dirs(character.root).input, dataset, what="dataset")
    manifest = Manifest.load(root / MANIFEST)
    variants = [("clean", 3, "")] + ([("alpha", 4, ALPHA_MARKER)] if alpha_mask else [])
    written: list[Path] = []
    skipped: list[str] = []
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
                        skipped.append(f"{code} {size}px (source {max(img.shape[:2])}px)")
                        continue
                    subset = character.subset(kind, size, outfit)
                    subset = with_marker(subset, marker) if marker else subset
                    dest = _write(manifest, f"{subset}/{code}.png", out, src, {"size": size, "channels": channels})
                    if dest:
                        written.append(dest)
    finally:
        manifest.save()
    if skipped:
        log.info("not upscaled, skipped: %s", ", ".join(dict.fromkeys(skipped)))
    log.info("%s: %d file(s) written for %d code(s) at %s px", root, len(written), len(picks),
             ", ".join(map(str, sizes)))
    return written
