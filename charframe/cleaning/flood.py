"""Model-free background removal for the plain backgrounds the prompts ask for.

The rule, and why each part is there:

- **How close is "background colour"** is measured on each picture, not fixed. After a 5×5 mean (which
  divides independent render noise by about five), the ring two pixels inside the border gives the
  background colour (its median) and its noise (the median distance of ring pixels to that colour). The tolerance is 3× that
  noise, at least 6 and at most 36 (RGB units, Euclidean). A fixed tolerance has to suit the noisiest
  picture, and then it erased near-white clothes on white (ΔRGB ≈ 30) from every quiet one.
- **Which background-coloured regions are background**: every region touching the border, and every
  enclosed one (the gap between a hair strand, the neck and a shoulder; under an arm) that covers at least
  0.4 % of the figure and whose *mean* colour is within half the tolerance of the background's. Kept as
  figure: a white collar, bow or eye that differs from the background by more than that, and any highlight
  too small to be a gap (eyes of exactly the background's colour). rembg-style removal drops such gaps,
  and keeping them taught a LoRA the background colour as part of the character.
- **Edges**: the 5×5 mean moves the boundary by up to three pixels, so a band of three pixels on each side
  is estimated again. Each pixel is taken as a mix a·F + (1-a)·B of the nearest solid figure colour F and
  the background B: a = projection of I - B on F - B in RGB (where anti-aliasing mixes), read at the finest
  scale (the pixel, a 3×3 mean, the 5×5 mean) whose noise is under a quarter of |F - B|. A pixel far from
  the line B → F is no such mix (a body pixel whose nearest solid colour is the hair's) and, like pixels
  where even the 5×5 mean is too noisy (a white collar against a white gap), keeps its class. Background
  wedges the 5×5 mean cannot see (where a head meets a shoulder) are opened the same way, from the
  background they touch, where the figure beside them stands out of the noise.

All of it is vectorised (box filters, connected components, a distance transform for the nearest solid
colour; no per-pixel Python): about 30 ms for a 768×768 picture on one idle core.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: bumped whenever the rule below changes, so `clean` redoes files cleaned by an older one (the manifest
#: records the settings)
ALGORITHM_VERSION = 2


@dataclass(frozen=True)
class FloodSettings:
    version: int = ALGORITHM_VERSION
    #: side of the mean filter the background test looks through (odd; noise falls by about this factor)
    smooth: int = 5
    #: tolerance = this × the border's measured noise, clamped to [min_tolerance, max_tolerance] (RGB units)
    noise_factor: float = 3.0
    min_tolerance: float = 6.0
    max_tolerance: float = 36.0
    #: a fixed tolerance (RGB units) instead of the measured one
    tolerance: float | None = None
    #: an enclosed region is background when its mean colour is within this fraction of the tolerance …
    hole_match: float = 0.5
    #: … and covers at least this fraction of the figure (the picture less the background around it): eyes and
    #: other small highlights of the background's colour are smaller
    min_hole: float = 0.004
    #: figure islands smaller than this fraction of the picture are dropped
    min_island: float = 0.0005
    #: an edge pixel's mix is read at the finest scale whose noise × this is under the figure's contrast
    edge_contrast: float = 4.0


@dataclass(frozen=True)
class Background:
    colour: np.ndarray  # (3,) float32, RGB
    noise: float  # median distance of the smoothed border ring to `colour`
    tolerance: float


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → float32 CIELAB (L* 0-100)."""
    return cv2.cvtColor(rgb.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2LAB)


def border_pixels(img: np.ndarray) -> np.ndarray:
    """The pixels of the outermost ring, (N, C)."""
    return np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])


def distance_map(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel of a float32 (H, W, 3) image to `ref`, (H, W) (OpenCV kernels:
    several times numpy's speed)."""
    diff = cv2.subtract(img, tuple(float(v) for v in ref) + (0.0,))
    sq = cv2.transform(cv2.multiply(diff, diff), np.ones((1, 3), np.float32))
    return cv2.sqrt(sq)


def noise_ring(img: np.ndarray, inset: int) -> np.ndarray:
    """The ring `inset` pixels in from the border, (N, C): where a mean filter of side 2·inset + 1 reads only
    the picture (at the border itself it reads mirrored pixels twice, which leaves more noise)."""
    if min(img.shape[:2]) <= 2 * inset + 2:
        return border_pixels(img)
    return border_pixels(img[inset:-inset, inset:-inset] if inset else img)


def ring_noise(img: np.ndarray, ref: np.ndarray, inset: int) -> float:
    """Median distance of the ring of `img` to `ref`: the background's noise at that scale (a median, so a
    figure covering less than half of the ring does not count)."""
    ring = noise_ring(img, inset)
    return float(np.median(np.sqrt(((ring - ref) ** 2).sum(axis=1))))


def clamp_tolerance(noise: float, s: FloodSettings) -> float:
    return s.tolerance if s.tolerance is not None else min(max(s.noise_factor * noise, s.min_tolerance),
                                                           s.max_tolerance)


def measure_background(smoothed: np.ndarray, s: FloodSettings) -> Background:
    """Colour, noise and tolerance from the border ring of the smoothed picture. Measured twice: the second
    time without the ring pixels outside the first tolerance (where the figure touches the border), so they
    pull neither the colour nor the noise."""
    ring = noise_ring(smoothed, s.smooth // 2)
    colour = np.median(ring, axis=0)
    dist = np.sqrt(((ring - colour) ** 2).sum(axis=1))
    plain = ring[dist < clamp_tolerance(float(np.median(dist)), s)]
    if len(plain):
        colour = np.median(plain, axis=0)
        dist = np.sqrt(((plain - colour) ** 2).sum(axis=1))
    noise = float(np.median(dist))
    return Background(colour.astype(np.float32), noise, clamp_tolerance(noise, s))


def background_regions(smoothed: np.ndarray, rgb: np.ndarray, bg: Background, s: FloodSettings) -> np.ndarray:
    """Bool (H, W): background-coloured regions (4-connected, at the smoothed scale) that touch the border,
    and enclosed ones of at least `min_hole` of the figure whose mean colour (unsmoothed, so the noise
    averages out) is within `hole_match` × the tolerance."""
    near = (distance_map(smoothed, bg.colour) < bg.tolerance).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=4)
    is_bg = np.zeros(n, bool)
    is_bg[np.unique(border_pixels(labels))] = True
    is_bg[0] = False  # label 0: the pixels not of the background's colour
    area = stats[:, cv2.CC_STAT_AREA]
    figure_area = labels.size - area[is_bg].sum()
    hole = ~is_bg & (area >= s.min_hole * figure_area)
    hole[0] = False
    for i in np.flatnonzero(hole):  # a few at most: each one's mean within its bounding box
        x, y, w, h = stats[i, :4]
        inside = (labels[y:y + h, x:x + w] == i).view(np.uint8)
        mean = np.float32(cv2.mean(rgb[y:y + h, x:x + w], mask=inside)[:3])
        is_bg[i] = float(np.sqrt(((mean - bg.colour) ** 2).sum())) < s.hole_match * bg.tolerance
    return is_bg[labels]


def drop_islands(alpha: np.ndarray, min_area: int) -> np.ndarray:
    """`alpha` without its (8-connected) parts covering fewer than `min_area` pixels: specks and noise in the
    background. Counted on the final alpha, not at the smoothed scale, where a 2×2 speck covers 6×6."""
    if min_area <= 1:
        return alpha
    n, labels, stats, _ = cv2.connectedComponentsWithStats((alpha > 0).view(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_area
    small[0] = False
    if small.any():
        alpha[small[labels]] = 0
    return alpha


CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


@dataclass(frozen=True)
class SolidColours:
    """The nearest solid figure colour of any pixel: the smoothed colour of the nearest figure pixel at least
    `depth` inside the figure, where the mean filter reads pure figure colour. An edge pixel is a mix of that
    colour and the background's."""

    labels: np.ndarray  # (H, W): label of the nearest solid pixel, 1-based, in scan order of the solid pixels
    where: np.ndarray  # flat index of solid pixel `label - 1`
    smoothed: np.ndarray  # (H·W, 3)
    background: np.ndarray

    def at(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) solid colours minus the background colour, and their lengths (the contrast)."""
        solid = self.smoothed[self.where[self.labels[ys, xs] - 1]] - self.background
        return solid, np.sqrt((solid * solid).sum(axis=1))


def nearest_solid(fg: np.ndarray, depth: int, smoothed: np.ndarray, bg: Background) -> SolidColours | None:
    """The figure's solid colours (None when no pixel is `depth` inside the figure)."""
    solid = cv2.erode(fg.view(np.uint8), disk(depth))
    where = np.flatnonzero(solid)
    if where.size == 0:
        return None
    _, labels = cv2.distanceTransformWithLabels(1 - solid, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    return SolidColours(labels, where, smoothed.reshape(-1, 3), bg.colour)


#: a pixel is a mix of a solid colour F and the background only if it lies near the line between them: within
#: this many × the scale's noise, plus this fraction of |F - B| (the solid colour is a local mean, not exact).
#: Off the line (a body pixel next to the hair, whose nearest solid colour is the hair's) it keeps its class.
MIX_NOISE = 3.0
MIX_SLACK = 0.15


def mix(pixels: np.ndarray, solid: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of `solid` is in `pixels` (both relative to the background): the projection of I - B on F - B
    (RGB, where anti-aliasing mixes), and each pixel's distance from the line B → F."""
    frac = (pixels * solid).sum(axis=1) / np.maximum(contrast * contrast, 1e-6)
    off = pixels - np.clip(frac, 0, 1)[:, None] * solid
    return frac, np.sqrt((off * off).sum(axis=1))


@dataclass(frozen=True)
class Scales:
    """The picture at the scales the edge pass reads (pixel, 3×3 mean, the smoothed one), each scale's
    noise, and the background colour the pixels are read relative to."""

    images: tuple[np.ndarray, ...]
    noise: tuple[float, ...]
    background: np.ndarray

    def at(self, scale: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(N, 3): the pixels' colours at `scale` minus the background colour."""
        return self.images[scale][ys, xs] - self.background


def make_scales(rgb: np.ndarray, smoothed: np.ndarray, bg: Background, inset: int) -> Scales:
    """Noise of every scale measured on the same ring as the background's."""
    images = (rgb, cv2.blur(rgb, (3, 3)), smoothed)
    return Scales(images, tuple(ring_noise(img, bg.colour, inset) for img in images), bg.colour)


def fill_wedges(fg: np.ndarray, scales: Scales, solids: SolidColours, s: FloodSettings) -> np.ndarray:
    """Background wedges narrower than the smoothing (where a head meets a shoulder) back to the background:
    pixels within `smooth` of the background that are background-coloured at the 3×3 scale and more
    background than figure, where the figure next to them stands out of that scale's noise, joined to the
    background when they touch it."""
    bg8 = (~fg).view(np.uint8)
    ys, xs = np.nonzero(cv2.dilate(bg8, disk(s.smooth)).view(bool) & fg)
    if ys.size == 0:
        return fg
    solid, contrast = solids.at(ys, xs)
    fine, noise = scales.at(1, ys, xs), scales.noise[1]
    ok = ((contrast >= s.edge_contrast * noise) & (mix(fine, solid, contrast)[0] < 0.5)
          & (np.sqrt((fine * fine).sum(axis=1)) < clamp_tolerance(noise, s)))
    if not ok.any():
        return fg
    wedge = np.zeros_like(bg8)
    wedge[ys[ok], xs[ok]] = 1
    n, labels = cv2.connectedComponents(wedge, connectivity=4)
    touching = np.zeros(n, bool)
    touching[labels[cv2.dilate(bg8, CROSS).view(bool) & wedge.view(bool)]] = True
    touching[0] = False
    return fg & ~touching[labels]


def edge_alpha(fg: np.ndarray, scales: Scales, solids: SolidColours, band: int, s: FloodSettings) -> np.ndarray:
    """Alpha in [0, 1]: 1 inside, 0 outside, and within `band` pixels of the boundary the mixing fraction
    read at the finest scale whose noise is under 1/`edge_contrast` of the figure's contrast there (so the
    estimate's error stays under that fraction); the class where no scale is quiet enough or the pixel is
    no mix of that colour. Fractions within 5 % of 0 or 1 snap to it, so noise does not leave the solid
    figure or the background a little translucent."""
    alpha = fg.astype(np.float32)
    fg8 = fg.view(np.uint8)
    ys, xs = np.nonzero(cv2.dilate(fg8, disk(band)).view(bool) & ~cv2.erode(fg8, disk(band)).view(bool))
    solid, contrast = solids.at(ys, xs)
    est = alpha[ys, xs]
    todo = np.ones(ys.size, bool)
    for scale, noise in enumerate(scales.noise):
        sel = np.flatnonzero(todo & (contrast >= s.edge_contrast * noise))
        frac, off = mix(scales.at(scale, ys[sel], xs[sel]), solid[sel], contrast[sel])
        mixed = off < MIX_NOISE * noise + MIX_SLACK * contrast[sel]
        est[sel[mixed]] = np.clip((frac[mixed] - 0.05) / 0.9, 0, 1)
        todo[sel] = False
    alpha[ys, xs] = est
    return alpha


def flood_alpha(rgb: np.ndarray, settings: FloodSettings = FloodSettings()) -> np.ndarray:
    """Alpha (H, W) float32 of the figure in `rgb` (H, W, 3 uint8) on a plain background."""
    s = settings
    img = rgb.astype(np.float32)
    smoothed = cv2.blur(img, (s.smooth, s.smooth))
    bg = measure_background(smoothed, s)
    fg = ~background_regions(smoothed, img, bg, s)
    min_island = int(s.min_island * rgb.shape[0] * rgb.shape[1])
    band = s.smooth // 2 + 1  # how far the mean filter can move the boundary, and one more
    solids = nearest_solid(fg, band + s.smooth // 2, smoothed, bg)
    if solids is None:
        return drop_islands(fg.astype(np.float32), min_island)
    scales = make_scales(img, smoothed, bg, s.smooth // 2)
    fg = fill_wedges(fg, scales, solids, s)
    return drop_islands(edge_alpha(fg, scales, solids, band, s), min_island)


def edge_pixels(alpha: np.ndarray) -> tuple[np.ndarray, ...]:
    """Indices of the partly transparent pixels (the only ones whose colour needs arithmetic)."""
    return np.nonzero((alpha > 0.0) & (alpha < 1.0))


def unmix(rgb: np.ndarray, alpha: np.ndarray, bg_rgb: np.ndarray) -> np.ndarray:
    """Foreground colours with the background's share taken out of edge pixels: F = (I - (1-a)·B) / a.

    Without it a cut-out keeps a halo of the old background colour when filled with another one. Pixels
    under 2 % alpha keep their colour (dividing by almost nothing would only amplify noise).
    """
    out = rgb.copy()
    idx = edge_pixels(alpha)
    a = alpha[idx][:, None]
    fgc = (rgb[idx].astype(np.float32) - (1 - a) * bg_rgb.astype(np.float32)) / np.maximum(a, 1e-3)
    out[idx] = np.where(a > 0.02, np.clip(fgc, 0, 255), rgb[idx]).astype(np.uint8)
    return out


def over(fg: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """`fg` composited over a plain `colour` (only the edge pixels need blending)."""
    out = np.empty_like(fg)
    out[:] = colour
    cv2.copyTo(fg, (alpha > 0.0).view(np.uint8), out)
    idx = edge_pixels(alpha)
    a = alpha[idx][:, None]
    out[idx] = (fg[idx].astype(np.float32) * a + np.float32(colour) * (1 - a) + 0.5).astype(np.uint8)
    return out


def background_rgb(rgb: np.ndarray) -> np.ndarray:
    """The border's median colour in RGB (for `unmix`)."""
    return np.median(border_pixels(rgb.reshape(rgb.shape[0], rgb.shape[1], -1)[..., :3]), axis=0)
