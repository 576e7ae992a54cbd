"""`clean`: background removal, fill colour and the transparent copy of every candidate of one image set.

`LoRAWork/<kw>/<set>/raw/f12-0.png` → `clean/f12-0.png` (RGB, background filled black or white) and
`alpha/f12-0.png` (RGBA with the figure's colours unmixed from the old background, for editing and masked
loss). A rerun redoes only files whose input or settings changed (a manifest in the set's folder, the one rule of
`util.manifest.decide`): a cleaned file edited by hand is kept while its candidate is unchanged, replaced (the
edit moved to `LoRAWork/replaced/`) when the candidate changed; the cleaned copies of candidates that are gone
are moved there too. An unreadable candidate is reported after every other file was cleaned.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import cv2
import numpy as np

from charframe.character import Character
from charframe.cleaning.flood import FloodSettings, background_rgb, flood_alpha, over, to_lab, unmix
from charframe.cleaning.images import candidates, read_image, write_png
from charframe.cleaning.rembg_method import (DEFAULT_MODEL, RembgModel, model_available, open_session,
                                             rembg_alpha, resolve_model)
from charframe.errors import CharframeError
from charframe.project import project_dirs
from charframe.util.manifest import Manifest, decide

log = logging.getLogger(__name__)

Method = Literal["auto", "flood", "rembg"]
METHODS = ("auto", "flood", "rembg")
FILLS = {"black": (0, 0, 0), "white": (255, 255, 255)}
#: hair = the top fraction of the figure's bounding box; darker than this L* → dark hair → black fill
HAIR_FRACTION = 0.2
DARK_HAIR_L = 50.0
MANIFEST = ".charframe-clean.json"


def hair_lightness(rgb: np.ndarray, alpha: np.ndarray) -> float:
    """Mean L* of the figure's top 20 % (its hair, for the pictures the templates ask for)."""
    fg = alpha > 0.5
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return 100.0
    top = rows[0] + max(1, int(round((rows[-1] - rows[0] + 1) * HAIR_FRACTION)))
    region = fg[rows[0]:top]
    return float(to_lab(rgb[rows[0]:top])[..., 0][region].mean())


def choose_fill(fill: str, rgb: np.ndarray, alpha: np.ndarray) -> str:
    """"black" or "white": the character's setting, or for "auto" the colour matching the hair (dark hair →
    black: the fill then blends into the silhouette instead of outlining it)."""
    if fill in FILLS:
        return fill
    if fill != "auto":
        raise CharframeError(f"fill must be black, white or auto, got {fill!r}")
    return "black" if hair_lightness(rgb, alpha) < DARK_HAIR_L else "white"


@dataclass(frozen=True)
class Cleaned:
    filled: np.ndarray  # (H, W, 3) uint8
    rgba: np.ndarray  # (H, W, 4) uint8
    fill: str


def compose(rgb: np.ndarray, alpha: np.ndarray, fill: str) -> Cleaned:
    """Unmix the edge colours from the old background, then fill and build the RGBA copy."""
    fg = unmix(rgb, alpha, background_rgb(rgb))
    colour = choose_fill(fill, rgb, alpha)
    filled = over(fg, alpha, FILLS[colour])
    a8 = cv2.convertScaleAbs(alpha, alpha=255.0)  # rounds and saturates to 0-255
    return Cleaned(filled, cv2.merge([*cv2.split(fg), a8]), colour)


def make_alpha_fn(method: Method, model: str | os.PathLike | None) -> tuple[str, Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The method actually used ("flood" / "rembg"), its alpha function and its parameters (for the manifest).

    `auto` = rembg when its model file is here, else flood fill.
    """
    if method not in METHODS:
        raise CharframeError(f"unknown method {method!r}; choose from {', '.join(METHODS)}", param="method")
    if method == "auto":
        method = "rembg" if model_available(model) else "flood"
        log.info("method auto → %s%s", method, "" if method == "rembg" else
                 f" (no rembg model {os.fspath(model) if model else DEFAULT_MODEL} found locally)")
    if method == "flood":
        settings = FloodSettings()
        return "flood", lambda rgb: flood_alpha(rgb, settings), {"method": "flood", **settings.__dict__}
    resolved: RembgModel = resolve_model(model)
    session = open_session(resolved)
    params = {"method": "rembg", "model": resolved.name, "file": str(resolved.path),
              "size": resolved.path.stat().st_size}
    return "rembg", lambda rgb: rembg_alpha(session, rgb), params


def clean_image(rgb: np.ndarray, alpha_fn: Callable[[np.ndarray], np.ndarray], fill: str) -> Cleaned:
    return compose(rgb, alpha_fn(rgb), fill)


def _outs(name: str) -> tuple[str, str]:
    return f"clean/{name}", f"alpha/{name}"


def clean_set(character: Character, set_name: str, *, method: Method = "auto", model: str | os.PathLike | None = None,
              progress: bool = True) -> list[Path]:
    """Clean every candidate in `raw/` of the set; return the files written (up-to-date ones are skipped)."""
    from tqdm import tqdm

    work = character.work_dir(set_name)
    raw = work / "raw"
    found = candidates(raw)
    if not found:
        raise CharframeError(f"{raw}: no candidates (<code>-<n>.png, e.g. f12-0.png); generate them first "
                             "(charframe generate) or put your own there")
    used, alpha_fn, params = make_alpha_fn(method, model)
    params = {**params, "fill": character.fill}
    manifest = Manifest.load(work / MANIFEST)
    recycler = project_dirs(character.root).recycler()
    names = [f"{code}-{i}.png" for code, ix in found.items() for i in ix]
    todo = []
    for n in names:
        actions = {o: decide(manifest.check(o, inputs=[raw / n], params=params)) for o in _outs(n)}
        if all(a in ("skip", "keep") for a in actions.values()):
            continue
        for o, a in actions.items():
            if a in ("replace", "keep"):  # redone as a pair: an edit of a changed candidate is set aside
                recycler.recycle(work / o)
        todo.append(n)
    wanted = {o for n in names for o in _outs(n)}
    for o in [o for o in manifest.names() if o not in wanted]:  # candidates that are gone
        if (work / o).is_file() and manifest.check(o).file == "ours":
            recycler.recycle(work / o)
        manifest.forget(o)

    def one(name: str) -> tuple[str, list[tuple[str, bytes, os.stat_result]] | str]:
        try:
            rgb = read_image(raw / name, 3)
        except CharframeError as e:
            return name, str(e)
        result = clean_image(rgb, alpha_fn, character.fill)
        return name, [(out, *write_png(work / out, img)) for out, img in zip(_outs(name), (result.filled, result.rgba))]

    written: list[Path] = []
    problems: list[str] = []
    # OpenCV and onnxruntime release the GIL: two threads keep two cores busy (decode, clean, encode)
    threads = 1 if used == "rembg" else 2
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool, \
                tqdm(total=len(todo), desc=f"clean {set_name} ({used})", unit="img", disable=not progress) as bar:
            for name, result in pool.map(one, todo):
                bar.update()
                if isinstance(result, str):
                    problems.append(result)
                    continue
                for out, data, st in result:
                    manifest.record(out, inputs=[raw / name], params=params, data=data, stat=st)
                    written.append(work / out)
    finally:
        manifest.save()
    if problems:
        done = f"\n{len(written) // 2} other image(s) cleaned and kept" if written else ""
        raise CharframeError("\n".join(problems) + done)
    log.info("%s: %d cleaned, %d up to date", work, len(written) // 2, len(names) - len(written) // 2)
    return written
