"""Render the template sets to disk: clay templates, control maps and overview sheets.

Layout (CONVENTIONS §1-2): `FaceTemplate/f12.png`, `FaceTemplate/control/<map>/f12.png`,
`FaceTemplate/overview.png`, the same for `BodyTemplate/` with `b` codes. Views 5-7 are made
by mirroring 3-1, so each source view is rendered once. Work is spread over processes (one
task per source view); files are only rewritten when their pixels change, so a regeneration
with the same settings leaves the folders (and git) untouched; a hidden manifest per set
(`.charframe-templates.json`, `charframe.util.manifest`) confirms unchanged files without reading them.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from charframe.errors import CharframeError
from charframe.util.files import atomic_write_bytes
from charframe.util.manifest import Manifest
from charframe.dataset.naming import ImageCode, require_code
from charframe.templates import maps as mp
from charframe.templates import openpose as op
from charframe.templates.camera import camera_for, frame_size, source_of
from charframe.templates.mannequin import Mannequin, build_mannequin
from charframe.templates.overview import overview_sheet, thumbnail
from charframe.templates.render import render
from charframe.project import find_project_root, project_dirs

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 64, 4096  # image height in px; 4096 is 16 MB of pixels per map, minutes per set on a CPU
ALL_MAPS = ("depth", "normal", "softedge", "canny", "openpose", "mask")
SET_DIRS = {"f": "FaceTemplate", "b": "BodyTemplate"}

Timings = dict[str, float]


@contextmanager
def _timed(timings: Timings | None, stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def _check_maps(maps: Iterable[str]) -> tuple[str, ...]:
    maps = tuple(maps)
    unknown = [m for m in maps if m not in ALL_MAPS]
    if unknown:
        raise CharframeError(f"unknown control map(s): {', '.join(unknown)}; known: {', '.join(ALL_MAPS)}")
    return maps


def render_source(src: ImageCode, size: int = 1024, elevation_deg: float = 30.0,
                  maps: Sequence[str] = ALL_MAPS, man: Mannequin | None = None,
                  timings: Timings | None = None, draw_pose: bool = True,
                  ) -> tuple[dict[str, np.ndarray], op.Keypoints]:
    """Images of one rendered view (azimuth 0-4): {"clay": ..., map: ...} and its keypoints.

    With `draw_pose=False` the OpenPose image is left out (only the keypoints are returned),
    so worker processes never import controlnet_aux and its torch stack.
    """
    man = man or build_mannequin()
    cam = camera_for(src, size, elevation_deg)
    with _timed(timings, "render"):
        buf = render(man, cam)
    out: dict[str, np.ndarray] = {}
    with _timed(timings, "clay"):
        out["clay"] = mp.clay(buf)
    points: op.Keypoints = []
    for name in maps:
        with _timed(timings, name):
            if name == "canny":
                out[name] = mp.canny(out["clay"])
            elif name == "openpose":
                points = op.keypoints(man, cam, buf)
                if draw_pose:
                    out[name] = op.draw(points, cam.width, cam.height)
            else:
                out[name] = getattr(mp, name)(buf)
    return out, points


def mirror_view(images: dict[str, np.ndarray], points: op.Keypoints) -> dict[str, np.ndarray]:
    """The images of the mirrored view (5-7 from 3-1); OpenPose is redrawn with left/right swapped."""
    out = {}
    for name, img in images.items():
        if name == "openpose":
            out[name] = op.draw(op.mirror_keypoints(points), img.shape[1], img.shape[0])
        else:
            out[name] = mp.mirror(img, name)
    return out


def render_code(code: ImageCode | str, size: int = 1024, elevation_deg: float = 30.0,
                maps: Sequence[str] = ALL_MAPS) -> dict[str, np.ndarray]:
    """All images of one template code, e.g. render_code("f12")["normal"] (5-7 mirrored)."""
    code = require_code(code) if isinstance(code, str) else code
    src, mirrored = source_of(code)
    images, points = render_source(src, size, elevation_deg, _check_maps(maps))
    return mirror_view(images, points) if mirrored else images


def encode_png(img: np.ndarray) -> bytes:
    """Lossless PNG, grayscale when the array is 2-D (zlib level 6: level 9 is 7x slower for ~8 % less)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _task(src: ImageCode, targets: list[ImageCode], size: int, elevation_deg: float,
          maps: tuple[str, ...]) -> tuple[list[tuple[ImageCode, dict[str, bytes], np.ndarray, op.Keypoints]], Timings]:
    """Worker: render one source view, derive its mirrors, encode every image but OpenPose."""
    timings: Timings = {}
    images, points = render_source(src, size, elevation_deg, maps, timings=timings, draw_pose=False)
    results = []
    for code in targets:
        mirrored = code != src
        view = mirror_view(images, []) if mirrored else images
        with _timed(timings, "encode"):
            encoded = {name: encode_png(img) for name, img in view.items()}
        pose = op.mirror_keypoints(points) if mirrored and points else points
        results.append((code, encoded, thumbnail(view["clay"], code.kind), pose))
    return results, timings


MANIFEST = ".charframe-templates.json"


def _write_if_changed(manifest: Manifest, name: str, data: bytes, params: dict) -> bool:
    """Write `data` to `name` (relative to the set folder) unless it already holds the same pixels; True if written.

    The manifest knows the files it wrote: an unchanged one with the same bytes is confirmed without reading it.
    """
    if manifest.holds(name, data):
        return False
    path = manifest.folder / name
    if path.is_file():
        same = path.read_bytes() == data
        if not same:
            try:
                with Image.open(path) as old:
                    same = np.array_equal(np.asarray(old), np.asarray(Image.open(io.BytesIO(data))))
            except OSError:
                same = False
        if same:
            manifest.record(name, params=params)
            return False
    st = atomic_write_bytes(path, data, parents=True)
    manifest.record(name, params=params, data=data, stat=st)
    return True


def check_out_root(out_root: str | os.PathLike) -> Path:
    """The folder that receives FaceTemplate/ and BodyTemplate/: a file there is one clear error."""
    root = Path(out_root)
    if root.exists() and not root.is_dir():
        raise CharframeError(f"{root}: is a file, but {{param}} must be a folder (it receives FaceTemplate/ and BodyTemplate/)",
                             param="out_root")
    for name in SET_DIRS.values():
        if (root / name).exists() and not (root / name).is_dir():
            raise CharframeError(f"{root / name}: is a file, but the template set needs this name for a folder")
    return root


def template_dirs(out_root: str | os.PathLike | None) -> dict[str, Path]:
    """{"f": FaceTemplate dir, "b": BodyTemplate dir}: under `out_root`, or the project's own."""
    if out_root is not None:
        root = check_out_root(out_root)
        return {kind: root / name for kind, name in SET_DIRS.items()}

    dirs = project_dirs(find_project_root())
    return {"f": dirs.face_templates, "b": dirs.body_templates}


def output_path(set_dir: Path, code: ImageCode, image: str) -> Path:
    """Where an image of a code lives: the clay template itself or control/<map>/<code>.png."""
    name = f"{code.code}.png"
    return set_dir / name if image == "clay" else set_dir / "control" / image / name


def generate_templates(out_root: str | os.PathLike | None = None, size: int = 1024,
                       azimuths: Iterable[int] = range(5), elevation_deg: float = 30.0,
                       maps: Iterable[str] = ALL_MAPS, *, sets: Iterable[str] = ("f", "b"),
                       elevations: Iterable[int] = (0, 1, 2), workers: int | None = None,
                       timings: Timings | None = None, progress: bool = False) -> list[Path]:
    """Render the template sets and their control maps; return every file of the sets.

    `out_root` None writes the project's FaceTemplate/ and BodyTemplate/ (charframe.toml
    [paths] respected), else `out_root`/FaceTemplate and `out_root`/BodyTemplate. `size` is the
    image height (f: size × size, b: size/2 × size). Azimuths 5-7 are mirrors of 3-1.
    `workers` processes (default: one per CPU, at most 4); `timings` collects seconds per stage.
    """
    maps = _check_maps(maps)
    azimuths = sorted(set(int(a) for a in azimuths))
    elevations = sorted(set(int(e) for e in elevations))
    sets = tuple(sets)
    if not MIN_SIZE <= size <= MAX_SIZE or size % 2:
        raise CharframeError(f"{{param}} must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size}", param="size")
    if not azimuths or any(not 0 <= a <= 7 for a in azimuths):
        raise CharframeError(f"{{param}} must be digits 0-7, got {azimuths}", param="azimuths")
    if any(e not in (0, 1, 2) for e in elevations) or any(s not in SET_DIRS for s in sets):
        raise CharframeError(f"elevations must be 0-2 and sets f/b, got {elevations} / {sets}")
    if not 0 < abs(elevation_deg) < 90:  # also refuses NaN
        raise CharframeError(f"{{param}} must be between 0 and 90, got {elevation_deg}", param="elevation_deg")
    dirs = template_dirs(out_root)

    tasks = []
    for kind in sets:
        for e in elevations:
            for src_az in sorted({a if a <= 4 else 8 - a for a in azimuths}):
                src = ImageCode(kind, e, src_az)
                targets = [ImageCode(kind, e, a) for a in azimuths if a == src_az or (a > 4 and 8 - a == src_az)]
                tasks.append((src, targets, size, elevation_deg, maps))

    workers = workers or min(os.cpu_count() or 1, 4)
    paths: list[Path] = []
    thumbs: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in sets}
    written = 0
    manifests = {kind: Manifest.load(dirs[kind] / MANIFEST) for kind in sets}
    params = {"size": size, "elevation_deg": elevation_deg}
    from tqdm import tqdm

    if "openpose" in maps:  # controlnet_aux pulls in torch: import it while the workers render
        threading.Thread(target=op.preload, name="import controlnet_aux", daemon=True).start()
    bar = tqdm(total=len(tasks), desc="templates", unit="view", disable=not progress)
    # spawn, not fork: the parent may hold torch/OpenMP threads (a fork could deadlock on them)
    pool = (ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1 and len(tasks) > 1 else None)
    try:
        results = (pool.map(_task, *zip(*tasks)) if pool else (_task(*t) for t in tasks))
        for views, task_timings in results:
            for stage, seconds in task_timings.items():
                if timings is not None:
                    timings[stage] = timings.get(stage, 0.0) + seconds
            for code, encoded, thumb, pose in views:
                if "openpose" in maps:
                    with _timed(timings, "openpose"):
                        width, height = frame_size(code.kind, size)
                        encoded["openpose"] = encode_png(op.draw(pose, width, height))
                with _timed(timings, "write"):
                    thumbs[code.kind][code.code] = thumb
                    for image, data in encoded.items():
                        path = output_path(dirs[code.kind], code, image)
                        name = path.relative_to(dirs[code.kind]).as_posix()
                        written += _write_if_changed(manifests[code.kind], name, data, params)
                        paths.append(path)
            bar.update(1)
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    with _timed(timings, "overview"):
        for kind in sets:
            path = dirs[kind] / "overview.png"
            written += _write_if_changed(manifests[kind], path.name, encode_png(np.asarray(overview_sheet(kind, thumbs[kind]))), params)
            paths.append(path)
            manifests[kind].save()
    log.info("templates: %d files in %s (%d changed)", len(paths),
             " and ".join(str(dirs[k]) for k in sets), written)
    return paths
