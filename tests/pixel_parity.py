"""Test images and (size, resized, bucket) cases whose scaled and cropped pixels sd-scripts recorded
(`data/sd_scripts_pixels.npz`, from its `trim_and_resize_if_required`)."""

from __future__ import annotations

import numpy as np
from PIL import Image

CASES = [  # original size, resized size, bucket
    ((150, 100), (96, 64), (64, 64)),  # downscale by a non-integer factor, centre crop of the width
    ((128, 128), (64, 64), (64, 64)),  # downscale x2
    ((100, 150), (64, 96), (64, 64)),  # downscale, centre crop of the height
    ((50, 30), (107, 64), (64, 64)),  # upscale, then crop
    ((32, 32), (64, 64), (64, 64)),  # upscale x2
    ((125, 85), (94, 64), (64, 64)),  # downscale, odd crop
]


def image(i: int, size: tuple[int, int]) -> Image.Image:
    """A gradient with some seeded noise: smooth enough to compress, detailed enough to show filters."""
    rng = np.random.default_rng(i)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return Image.fromarray(np.clip(base + rng.integers(0, 24, (h, w, 3)), 0, 255).astype(np.uint8))
