"""Multi-size export (CONVENTIONS §4): the picked, cleaned images of one set → sibling subset folders.

`LoRAWork/krnk/face/clean/f12-2.png` (picked for f12) → `LoRAInput/4_krnk/krnk girl_f0512/f12.png`,
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
from charframe.cleaning.images import read_image, write_png
from charframe.cleaning.pick import read_picks
from charframe.dataset.naming import ALPHA_MARKER, with_marker
from charframe.errors import CharframeError
from charframe.util.files import backup_file
from charframe.util.manifest import Manifest, Status

log = logging.getLogger(__name__)

INPUT_DIR = "LoRAInput"
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
    root = character.root / INPUT_DIR / dataset
    manifest = Manifest.load(root / MANIFEST)
    variants = [("clean", 3, "")] + ([("alpha", 4, ALPHA_MARKER)] if alpha_mask else [])
    written: list[Path] = []
    skipped: dict[tuple[int, int], list[str]] = {}  # (size, source size) → codes
    try:
        for code, index in picks.items():
            if code[0] != kind:
                raise CharframeError(f"{work / 'picks.toml'}: {code} is not a {set_name} code")
            for folder, channels, marker in variants:
                src = work / folder / f"{code}-{index}.png"
                if not src.is_file():
                    raise CharframeError(f"{src}: picked for {code} but not there; run charframe clean again")
                img = read_image(src, channels)
                for size in sizes:
                    out = resize_longer(img, size)
                    if out is None:
                        skipped.setdefault((size, max(img.shape[:2])), []).append(code)
                        continue
                    subset = character.subset(kind, size, outfit)
                    subset = with_marker(subset, marker) if marker else subset
                    dest = _write(manifest, f"{subset}/{code}.png", out, src, {"size": size, "channels": channels})
                    if dest:
                        written.append(dest)
    finally:
        manifest.save()
    what = f"{character.keyword} {set_name} → {root}"
    if written:
        log.info("%s: %d file(s) written for %d code(s) at %s px", what, len(written), len(picks),
                 ", ".join(map(str, sizes)))
        if skipped:
            log.info("%s: never upscaled, so %s", what, skipped_text(skipped))
    else:
        log.info("%s: up to date (%d code(s) at %s px)", what, len(picks), ", ".join(map(str, sizes)))
    return written


def skipped_text(skipped: dict[tuple[int, int], list[str]]) -> str:
    """`no 768 px copy of 15 codes (their pictures are 512 px)` — one clause per (size, picture size)."""
    parts = []
    for (size, source), codes in sorted(skipped.items()):
        codes = list(dict.fromkeys(codes))
        which = codes[0] if len(codes) == 1 else f"{len(codes)} codes"
        parts.append(f"no {size} px copy of {which} (picture{'s are' if len(codes) > 1 else ' is'} {source} px)")
    return "; ".join(parts)
