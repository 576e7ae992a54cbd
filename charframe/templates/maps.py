"""Images from render buffers: the clay template and the exact ControlNet control maps.

Each map is a per-sample shader resolved through `Buffers.resolve`, so silhouette pixels are
averaged over their sub-samples (anti-aliased) while the rest costs one sample per pixel. Every
map is a uint8 array of the camera's size: (H, W) grayscale or (H, W, 3) RGB. Lights are fixed
to the camera, so every view is lit the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from charframe.templates.render import Buffers

CLAY_BACKGROUND = 58  # dark neutral grey: a light figure with a clear silhouette
NORMAL_BACKGROUND = (128, 128, 255)  # a flat wall facing the camera


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def ambient_occlusion(buf: Buffers, radius_px: float) -> np.ndarray:
    """Cheap screen-space occlusion: how far a pixel sits behind its neighbourhood's depth.

    Recesses (neck under the chin, armpits, between the legs) darken softly, which reads as
    form without a shadow-casting light. Computed at quarter resolution: it is smooth anyway.
    """
    h, w = buf.depth.shape
    small = (max(w // 4, 1), max(h // 4, 1))
    mask = cv2.resize(buf.mask.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    z = cv2.resize(np.where(buf.mask, buf.depth, 0).astype(np.float32), small, interpolation=cv2.INTER_AREA)
    sigma = radius_px / 4
    around = _blur(z, sigma) / np.maximum(_blur(mask, sigma), 1e-6)
    around = cv2.resize(around, (w, h), interpolation=cv2.INTER_LINEAR)
    behind = np.clip((buf.depth - around) / 0.06, 0, 1)
    return np.where(buf.mask, 1.0 - 0.55 * behind, 1.0).astype(np.float32)


_KEY = np.array([-0.45, 0.55, 0.70], np.float32) / np.linalg.norm([-0.45, 0.55, 0.70])


def _clay_shade(depth: np.ndarray, n: np.ndarray, m: np.ndarray, ao: np.ndarray) -> np.ndarray:
    wrap = 0.35
    diffuse = np.clip((n @ _KEY + wrap) / (1 + wrap), 0, 1)
    sky = 0.5 + 0.5 * n[..., 1]  # hemisphere fill: surfaces facing up catch more light
    rim = np.clip(1.0 - n[..., 2], 0, 1) ** 3
    shade = (0.62 * diffuse + 0.30 * sky) * ao + 0.10 * rim
    value = 255.0 * np.clip(0.10 + 0.86 * shade, 0, 1) ** (1 / 1.15)
    return np.where(m, value, CLAY_BACKGROUND)


def clay(buf: Buffers) -> np.ndarray:
    """The shaded template image: light matte clay, soft key light from the upper left, (H, W) uint8."""
    ao = ambient_occlusion(buf, radius_px=0.012 * buf.depth.shape[0])
    return to_u8(buf.resolve(_clay_shade, ao))


def mask(buf: Buffers) -> np.ndarray:
    """Silhouette: 255 figure, 0 background, anti-aliased edge, (H, W) uint8."""
    return to_u8(buf.resolve(lambda d, n, m: m * np.float32(255)))


def depth(buf: Buffers) -> np.ndarray:
    """Depth like MiDaS output: inverse depth min-max normalised, near = 255, background = 0.

    MiDaS predicts relative inverse depth and the ControlNet depth preprocessor stretches it to
    0..255 per image; here the far end of that stretch is a virtual wall a little behind the
    figure (25 % of its depth range), so the farthest visible body part stays distinct from
    the background.
    """
    z = buf.depth[buf.mask]
    near, far = float(z.min()), float(z.max())
    wall = far + 0.25 * max(far - near, 1e-3)
    scale = 255.0 / (1.0 / near - 1.0 / wall)

    def shade(d: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.where(m, (1.0 / np.where(m, d, 1) - 1.0 / wall) * scale, 0)

    return to_u8(buf.resolve(shade))


def _normal_shade(d: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    rgb = np.stack([1.0 - n[..., 0], 1.0 + n[..., 1], 1.0 + n[..., 2]], axis=-1) * 127.5
    return np.where(m[..., None], rgb, np.asarray(NORMAL_BACKGROUND, np.float32))


def normal(buf: Buffers) -> np.ndarray:
    """Camera-space normals in the colour convention of SD1.5 normal ControlNets, (H, W, 3) uint8.

    control_v11p_sd15_normalbae was trained on Bae et al.'s estimator output, which follows the
    ScanNet protocol and is coloured as (n + 1) / 2 with red = pointing LEFT, green = UP,
    blue = towards the viewer (the ControlNet 1.1 notes accept rendered maps "as long as the
    normal map follows ScanNet's protocol"; it is OpenGL's convention with red flipped). A
    surface facing the camera is (128, 128, 255); so is the background, like a flat wall.
    """
    return to_u8(buf.resolve(_normal_shade))


def edges(buf: Buffers, crease_deg: float = 38.0, gap_m: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """(contours, creases) as boolean images at buffer resolution.

    Contours: the silhouette and every depth jump of more than `gap_m` (an arm in front of the
    body), marked on the nearer side. Creases: neighbouring normals more than `crease_deg` apart
    on a continuous surface (jaw line, ears, nose, sockets, where limbs meet the trunk).
    """
    m = buf.mask
    z = np.where(m, buf.depth, np.float32(1e6))
    n = buf.normal
    contour = np.zeros_like(m)
    crease = np.zeros_like(m)
    cos_t = np.cos(np.radians(crease_deg))
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        za, zb = z[tuple(a)], z[tuple(b)]
        jump = np.abs(za - zb) > gap_m
        near_a = jump & (za < zb)
        near_b = jump & (zb <= za)
        contour[tuple(a)] |= near_a
        contour[tuple(b)] |= near_b
        bend = ~jump & m[tuple(a)] & m[tuple(b)] & ((n[tuple(a)] * n[tuple(b)]).sum(-1) < cos_t)
        crease[tuple(a)] |= bend
        crease[tuple(b)] |= bend
    return contour & m, crease & ~contour


def _soft_lines(lines: np.ndarray, half_width: float, sigma: float) -> np.ndarray:
    """White lines of `half_width` px with a Gaussian falloff of `sigma` px, float in [0, 1]."""
    dist = cv2.distanceTransform((~lines).astype(np.uint8), cv2.DIST_L2, 5)
    x = np.clip(dist - half_width, 0, 10 * sigma) / sigma
    return np.exp(-0.5 * x * x)


def softedge(buf: Buffers) -> np.ndarray:
    """HED-style soft lines, white on black, usable as-is by the soft-edge ControlNet, (H, W) uint8.

    Widths scale with the image so the map looks the same once ControlNet resizes it to 512 px
    (about a 3 px soft line there); creases are drawn fainter than contours, as HED does.
    """
    contour, crease = edges(buf)
    px = buf.depth.shape[0] / 512.0  # pixels per pixel of a 512 px image
    strong = _soft_lines(contour, 0.6 * px, 0.9 * px)
    weak = _soft_lines(crease, 0.3 * px, 0.8 * px) * 0.6
    return to_u8(255.0 * np.maximum(strong, weak))


def canny(clay_img: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """cv2.Canny of the clay template with the ControlNet preprocessor's default thresholds."""
    return cv2.Canny(clay_img, low, high)


def mirror(img: np.ndarray, kind: str) -> np.ndarray:
    """The horizontal mirror of a map; a normal map's left/right (red) component flips too."""
    out = np.ascontiguousarray(img[:, ::-1])
    if kind == "normal":
        out[..., 0] = 255 - out[..., 0]
    return out
