"""Reading and writing the PNGs of the cleaning steps, with one clear error for an unreadable file (or one whose
header asks for more pixels than charframe decodes: `dataset.imagesize.check_pixels`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from charframe.dataset.imagesize import check_pixels
from charframe.errors import CharframeError
from charframe.util.files import atomic_write_bytes

#: a candidate file name: `<code>-<index>.png`, e.g. f12-0.png
CANDIDATE_RE = re.compile(r"([fb][0-2][0-7])-([0-9]+)\.png")


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 RGB (3) or RGBA (4; opaque when the file has no alpha), or (H, W) for 1."""
    path = Path(path)
    check_pixels(path)  # a 30000×30000 (or lying) header is refused before the decoder allocates for it
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CharframeError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (cv2.error, MemoryError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:160]
        raise CharframeError(f"{path}: cannot be decoded ({first}); delete or replace it and run again") from None
    if img is None or img.dtype != np.uint8:
        raise CharframeError(f"{path}: not a readable 8-bit image (corrupt or truncated?); "
                             "delete or replace it and run again")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if channels == 4:
        return rgba
    if channels == 3:
        return np.ascontiguousarray(rgba[..., :3])
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2GRAY)


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an RGB, RGBA or grey uint8 array."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    # fast settings: level 1 + RLE filter is ~2x quicker than the default and as small on drawn pictures
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:  # pragma: no cover - encoding an array cannot fail for uint8
        raise CharframeError("could not encode a PNG")
    return buf.tobytes()


def write_png(path: str | os.PathLike, img: np.ndarray) -> tuple[bytes, os.stat_result]:
    """Write `img` atomically; return its bytes and the new file's stat (for a manifest)."""
    data = encode_png(img)
    return data, atomic_write_bytes(path, data, fsync=False)


def candidates(folder: Path) -> dict[str, list[int]]:
    """`{code: [candidate indices]}` of the `<code>-<i>.png` files in `folder`, sorted."""
    found: dict[str, list[int]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            m = CANDIDATE_RE.fullmatch(p.name)
            if m and p.is_file():
                found.setdefault(m.group(1), []).append(int(m.group(2)))
    return {code: sorted(ix) for code, ix in sorted(found.items())}
