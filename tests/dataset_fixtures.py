"""Helpers that build small dataset trees on disk (real PNG files, tiny to encode)."""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image

KRNK_SIZES = (128, 256, 384, 512, 640, 768)


@functools.lru_cache(maxsize=None)
def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def put_images(folder: Path, names: list[str], size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        (folder / name).write_bytes(png_bytes(*size))
        out.append(folder / name)
    return out


def krnk_tree(root: Path, codes: tuple[str, ...] = ("f00", "f02", "f14")) -> Path:
    """`root/LoRAInput/4_krnk/krnk girl_f0128 … krnk girl_f0768`, square images of each size."""
    ds = root / "LoRAInput" / "4_krnk"
    for size in KRNK_SIZES:
        put_images(ds / f"krnk girl_f{size:04d}", [f"{c}.png" for c in codes], (size, size))
    return ds
