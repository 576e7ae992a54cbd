"""Flood-fill background removal on synthetic pictures with known silhouettes: IoU ≥ 0.99, soft edges."""

from __future__ import annotations

import numpy as np
import pytest

from charframe.cleaning.flood import FloodSettings, flood_alpha, unmix
from charframe.testing.figures import compose_figure, figure_mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("background,hair", [((246, 244, 238), (30, 25, 35)),   # off-white, dark hair
                                             ((40, 60, 90), (240, 230, 200)),     # dark blue, light hair
                                             ((120, 200, 120), (90, 60, 40))])    # green, brown hair
def test_flood_recovers_the_silhouette(background, hair) -> None:
    cover = figure_mask((160, 128), shift=(0.05, 0.0))
    rgb = compose_figure(cover, hair=hair, background=background)
    alpha = flood_alpha(rgb)
    assert iou(alpha > 0.5, cover > 0.5) >= 0.99
    # solid inside and outside, soft only at the edge
    assert (alpha[cover > 0.999] > 0.95).mean() > 0.999
    assert alpha[cover == 0].max() <= 0.5
    edge = (cover > 0.2) & (cover < 0.8)
    assert np.abs(alpha[edge] - cover[edge]).mean() < 0.25


def test_figure_touching_the_border_and_specks() -> None:
    cover = figure_mask((128, 128), shift=(0.0, 0.15))  # torso runs off the bottom edge
    rgb = compose_figure(cover)
    rgb[10:12, 10:12] = (0, 0, 0)  # a 4-pixel speck in the background is not the figure
    alpha = flood_alpha(rgb)
    assert iou(alpha > 0.5, cover > 0.5) >= 0.99
    assert alpha[10:12, 10:12].max() == 0


def test_tolerance_and_unmix() -> None:
    cover = figure_mask((96, 96))
    rgb = compose_figure(cover, body=(240, 238, 230), noise=0)   # a body almost the background's colour
    loose = flood_alpha(rgb, FloodSettings(tolerance=30))       # too loose: the flood eats the body
    assert (loose > 0.5).sum() < 0.7 * (cover > 0.5).sum()
    # unmixing takes the background out of an edge pixel: 50 % red over white → red
    px = np.array([[[255, 128, 128]]], np.uint8)
    assert tuple(unmix(px, np.array([[0.5]], np.float32), np.array([255, 255, 255]))[0, 0]) == (255, 1, 1)
