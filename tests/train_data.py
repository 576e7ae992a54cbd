"""Tiny training datasets for the training tests: images + .txt captions + a dataset TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image

from charframe.util.workers import torch_threads


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Import into a test module: one torch thread while it runs. The tiny model's ops are too small
    to share between threads, and CI shares its 2 cores (this made the training tests ~5x faster)."""
    with torch_threads(1):
        yield


def write_images(folder: Path, n: int, size: tuple[int, int] = (64, 64), captions: bool | list[bool] = True,
                 caption: str = "krnk, white background, from front", prefix: str = "f0") -> list[Path]:
    """`n` distinct images (a coloured block on black) with `.txt` captions where asked."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        w, h = size
        arr[h // 4 : 3 * h // 4, w // 8 + i : w // 2 + i] = [200, (60 * i) % 256, 40]
        arr[:, : w // 8] = [0, 0, 255]  # a blue left edge: makes a horizontal flip visible
        p = folder / f"{prefix}{i}.png"
        Image.fromarray(arr).save(p)
        want = captions[i] if isinstance(captions, list) else captions
        if want:
            p.with_suffix(".txt").write_text(caption, encoding="utf-8")
        paths.append(p)
    return paths


def write_toml(path: Path, general: dict[str, Any], datasets: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({"general": general, "datasets": datasets}), encoding="utf-8")
    return path


def charframe_dataset(root: Path, n: int = 4, size: int = 64, repeats: int = 2, batch: int = 2) -> Path:
    """A project `root` with `LoRAInput/<repeats>_krnk/` laid out like charframe writes it (§4)."""
    ds = root / "LoRAInput" / f"{repeats}_krnk"
    sub = ds / f"krnk girl_f{size:04d}"
    write_images(sub, n, (size, size))
    return write_toml(
        ds / f"{repeats}_krnk.toml",
        {"color_aug": True, "enable_bucket": True, "bucket_no_upscale": True, "caption_extension": ".txt",
         "num_repeats": repeats, "min_bucket_reso": min(size, 256)},  # sd-scripts refuses resolution < min_bucket_reso
        [{"resolution": [size, size], "batch_size": batch,
          "subsets": [{"image_dir": str(sub), "class_tokens": "krnk girl", "flip_aug": True}]}],
    )
