"""Flood-fill background removal on synthetic pictures with exact masks.

The varied cases of issue #26 (gaps closed by hair strands and arms, white / near-white / pastel clothes on
white, dark clothes on black, a figure running off two borders, white highlights beside white hair; render
noise σ 3 and 6): silhouette IoU ≥ 0.98 each, enclosed gaps transparent, highlights opaque. Then the
pieces of the rule one by one: the tolerance follows the border's noise, which enclosed regions count as
background, soft anti-aliased edges, specks, a fixed tolerance.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from charframe.cleaning.flood import (Background, FloodSettings, background_regions, disk, flood_alpha,
                                      measure_background, unmix)
from charframe.testing.figures import FIGURE_CASES, FIGURE_NOISE, compose_figure, draw_case, figure_mask

SETTINGS = FloodSettings()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def farther_than(mask: np.ndarray, radius: int) -> np.ndarray:
    """The pixels of `mask` more than `radius` pixels from any pixel outside it."""
    return cv2.erode(mask.view(np.uint8), disk(radius)).view(bool)


@pytest.mark.parametrize("noise", FIGURE_NOISE)
@pytest.mark.parametrize("case", FIGURE_CASES, ids=lambda c: c.name)
def test_synthetic_figures(case, noise) -> None:
    fig = draw_case(dataclasses.replace(case, noise=noise), (512, 384), seed=int(noise))
    alpha = flood_alpha(fig.rgb)
    truth = fig.coverage > 0.5
    assert iou(alpha > 0.5, truth) >= 0.98
    # gaps enclosed by the figure are background, beyond the edge band of a few pixels
    gaps = farther_than(fig.gaps, SETTINGS.smooth)
    assert not gaps.any() or alpha[gaps].max() == 0
    # the figure itself stays solid there too (near-white clothes are not background)
    solid = farther_than(fig.coverage >= 0.999, SETTINGS.smooth)
    assert (alpha[solid] == 1).mean() >= 0.999
    for name, pixels in fig.highlights.items():
        if name == "collar":  # beside the gaps: opaque beyond the edge band, kept (> 0.5) almost everywhere
            assert alpha[pixels & farther_than(fig.coverage >= 0.999, SETTINGS.smooth + 1)].min() >= 0.99
            assert (alpha[pixels] > 0.5).mean() >= 0.985
        else:  # eyes and a bow inside the figure: every pixel opaque
            assert alpha[pixels].min() >= 0.99, name


def test_the_cases_cover_the_issue() -> None:
    """Gaps closed by strands and by arms, white/near-white/pastel clothes on white, dark on black, two borders,
    both noise levels, and the three highlights."""
    figs = {c.name: draw_case(c, (128, 96)) for c in FIGURE_CASES}
    assert sum(c.strands for c in FIGURE_CASES) >= 3 and sum(c.arm_gap for c in FIGURE_CASES) >= 3
    assert all(figs[c.name].gaps.sum() > 0 for c in FIGURE_CASES if c.strands or c.arm_gap)
    white = [c for c in FIGURE_CASES if min(c.background) >= 240]
    assert {c.clothes for c in white} >= {(255, 255, 255), (230, 230, 235), (250, 222, 230)}
    assert any(max(c.background) <= 20 and max(c.clothes) <= 50 for c in FIGURE_CASES)
    touched = [sum(side.any() for side in (t[0], t[-1], t[:, 0], t[:, -1]))
               for t in (f.coverage > 0.5 for f in figs.values())]
    assert max(touched) >= 2 and min(touched) >= 1
    assert set(FIGURE_NOISE) == {3.0, 6.0}
    assert {n for f in figs.values() for n in f.highlights} == {"eyes", "bow", "collar"}


@pytest.mark.parametrize("sigma,expected", [(0.0, 6.0), (3.0, 6.0), (12.0, None), (30.0, None), (60.0, 36.0)])
def test_tolerance_follows_the_measured_noise(sigma, expected) -> None:
    """3 × the median distance of the smoothed border ring to its median colour, clamped to [6, 36]."""
    rgb = np.clip(np.random.default_rng(1).normal(128, sigma, (200, 200, 3)), 0, 255).astype(np.float32)
    smoothed = cv2.blur(rgb, (5, 5))
    bg = measure_background(smoothed, SETTINGS)
    assert np.abs(bg.colour - 128).max() < 1 + sigma / 5
    # independent noise of σ per channel, after a 5×5 mean: σ/5 per channel, median distance ≈ 1.54 σ/5
    assert bg.noise == pytest.approx(1.54 * sigma / 5, rel=0.15, abs=0.05)
    assert bg.tolerance == pytest.approx(expected if expected else 3 * bg.noise)
    assert measure_background(smoothed, FloodSettings(tolerance=20)).tolerance == 20


def test_the_border_colour_ignores_a_figure_on_the_border() -> None:
    rgb = np.full((100, 100, 3), 240, np.float32)
    rgb[60:, :45] = (20, 30, 200)  # a figure covering a fifth of the ring
    bg = measure_background(rgb, SETTINGS)
    assert np.array_equal(bg.colour, [240, 240, 240]) and bg.noise == 0 and bg.tolerance == 6


def _donut(inner_colour, hole_px: int, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    """A dark ring (the figure) around a square of `inner_colour` on a 240 grey background."""
    img = np.full((200, 200, 3), 240, np.float32)
    cv2.circle(img, (100, 100), 70, (40, 30, 50), -1)
    half = int(np.sqrt(hole_px)) // 2
    img[100 - half:100 + half, 100 - half:100 + half] = inner_colour
    return np.clip(img + np.random.default_rng(seed).normal(0, noise, img.shape), 0, 255).astype(np.float32)


@pytest.mark.parametrize("inner,hole_px,is_background", [
    (240, 40 * 40, True),        # a gap of exactly the background colour: background
    (240, 10 * 10, False),       # … but under 0.4 % of the figure (an eye's size): kept
    (244, 40 * 40, False),       # every pixel within the tolerance, the mean off by more than half of it: kept
    (250, 40 * 40, False),       # a white collar on a grey-white background: kept
])
def test_enclosed_regions(inner, hole_px, is_background) -> None:
    rgb = _donut(inner, hole_px)
    smoothed = cv2.blur(rgb, (5, 5))
    bg = measure_background(smoothed, SETTINGS)
    assert bg.tolerance == 6  # noise σ 3 → under the floor
    region = background_regions(smoothed, rgb, bg, SETTINGS)
    assert region[100, 100] == is_background
    assert region[0, 0] and not region[100, 40]  # the outside is background, the ring is not


def test_background_regions_with_a_given_background() -> None:
    """The hole test reads the unsmoothed mean: noise averages out, a shift of the colour does not."""
    rgb = _donut(244, 40 * 40, noise=6.0)
    smoothed = cv2.blur(rgb, (5, 5))
    strict = Background(np.float32([240, 240, 240]), 0.0, 12.0)
    assert not background_regions(smoothed, rgb, strict, SETTINGS)[100, 100]  # mean off by 6.9 ≥ 12/2
    loose = Background(np.float32([240, 240, 240]), 0.0, 16.0)
    assert background_regions(smoothed, rgb, loose, SETTINGS)[100, 100]  # 6.9 < 16/2


@pytest.mark.parametrize("background,hair", [((246, 244, 238), (30, 25, 35)),   # off-white, dark hair
                                             ((40, 60, 90), (240, 230, 200)),     # dark blue, light hair
                                             ((120, 200, 120), (90, 60, 40))])    # green, brown hair
def test_soft_edges(background, hair) -> None:
    cover = figure_mask((160, 128), shift=(0.05, 0.0))
    rgb = compose_figure(cover, hair=hair, background=background)
    alpha = flood_alpha(rgb)
    assert iou(alpha > 0.5, cover > 0.5) >= 0.99
    # solid inside and outside (the wedge where the head meets a shoulder too), soft only at the edge
    assert (alpha[cover > 0.999] > 0.95).mean() > 0.999
    assert alpha[cover == 0].max() <= 0.5
    edge = (cover > 0.2) & (cover < 0.8)
    assert np.abs(alpha[edge] - cover[edge]).mean() < 0.06
    assert ((alpha[edge] > 0) & (alpha[edge] < 1)).mean() > 0.9  # anti-aliased pixels get fractions


def test_figure_touching_the_border_and_specks() -> None:
    cover = figure_mask((128, 128), shift=(0.0, 0.15))  # torso runs off the bottom edge
    rgb = compose_figure(cover)
    rgb[10:12, 10:12] = (0, 0, 0)  # a 4-pixel speck in the background is not the figure
    alpha = flood_alpha(rgb)
    assert iou(alpha > 0.5, cover > 0.5) >= 0.99
    assert alpha[10:12, 10:12].max() == 0


def test_fixed_tolerance_and_unmix() -> None:
    cover = figure_mask((96, 96))
    rgb = compose_figure(cover, body=(240, 238, 230), noise=0)   # a body almost the background's colour
    assert iou(flood_alpha(rgb) > 0.5, cover > 0.5) >= 0.98      # measured: noise 0 → tolerance 6 < 11.7
    loose = flood_alpha(rgb, FloodSettings(tolerance=30))       # too loose: the flood eats the body
    assert (loose > 0.5).sum() < 0.7 * (cover > 0.5).sum()
    # unmixing takes the background out of an edge pixel: 50 % red over white → red
    px = np.array([[[255, 128, 128]]], np.uint8)
    assert tuple(unmix(px, np.array([[0.5]], np.float32), np.array([255, 255, 255]))[0, 0]) == (255, 1, 1)


def test_plain_picture_has_no_figure() -> None:
    rgb = np.clip(np.random.default_rng(0).normal(200, 4, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert flood_alpha(rgb).max() == 0
