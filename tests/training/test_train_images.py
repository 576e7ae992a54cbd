"""Scaling and cropping to the bucket give exactly sd-scripts' pixels.

`data/sd_scripts_pixels.npz` was recorded with sd-scripts 48d368fa's `trim_and_resize_if_required`
(OpenCV 4.10 area filter for downscales, PIL Lanczos for upscales, centre crop) on
`pixel_parity.CASES`.
"""

from pathlib import Path

import numpy as np
import pytest

from charframe.training.data import ImageEntry, TrainingSubset
from charframe.training.images import load_pixels
from pixel_parity import CASES, image

REF = np.load(Path(__file__).parents[1] / "data" / "sd_scripts_pixels.npz")


@pytest.mark.parametrize("i", range(len(CASES)))
def test_scaled_and_cropped_pixels_equal_sd_scripts(i: int, tmp_path: Path) -> None:
    size, resized, bucket = CASES[i]
    path = tmp_path / f"{i}.png"
    image(i, size).save(path)
    subset = TrainingSubset(tmp_path, 1, False, None, ".txt", False, False, False, False, 0, None, None)
    pixels = load_pixels(ImageEntry(path, "", size, resized, bucket, 0, False, 1), subset, np.random.default_rng(0))
    ours = np.rint((pixels.numpy().transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)
    assert np.array_equal(ours, REF[f"case{i}"])


COLOR = np.load(Path(__file__).parents[1] / "data" / "sd_scripts_color_aug.npz")


@pytest.mark.parametrize("name", ["hue_p5.3", "hue_m7.1", "gamma_0.96", "gamma_1.04"])
def test_color_aug_operations_equal_sd_scripts(name: str) -> None:
    """`data/sd_scripts_color_aug.npz`: sd-scripts' `AugHelper.color_aug` with its random draws fixed
    (hue shift +5.3 / −7.1 of 180 steps, gamma 0.96 / 1.04) on one 32×32 image."""
    from charframe.training.images import hue_shift, raw_gamma

    kind, value = name.split("_")
    value = float(value.replace("p", "").replace("m", "-"))
    ours = hue_shift(COLOR["input"], value) if kind == "hue" else raw_gamma(COLOR["input"], value)
    assert np.array_equal(ours, COLOR[name])
