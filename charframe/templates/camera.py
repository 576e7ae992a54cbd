"""Template code → pinhole camera, following CONVENTIONS §2.

`f` frames a bust shot (square: head in the upper half, chest cut at the lower edge), `b` the
full figure with a margin (portrait 1:2). The camera orbits a fixed target at a fixed distance,
like a photographer walking around the model, so the figure keeps its size across angles.

Elevation digit: 0 horizontal, 1 from above (+elevation_deg), 2 from below (−elevation_deg).
Azimuth digit d: the camera stands at d·45° counter-clockwise seen from above, starting in
front of the figure: d=2 looks at the figure's LEFT side (the figure faces image-left),
d=4 is straight behind. d=5..7 are the horizontal mirrors of d=3..1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charframe.dataset.naming import ImageCode, require_code


@dataclass(frozen=True)
class Framing:
    """How one set is photographed (metres, degrees)."""

    target_y: float  # look-at height on the figure's axis
    half_height: float  # half the frame's height at the target, at elevation 0
    distance: float  # camera to target
    aspect: float  # width / height


FRAMINGS = {
    "f": Framing(target_y=1.345, half_height=0.300, distance=1.7, aspect=1.0),
    "b": Framing(target_y=0.800, half_height=0.900, distance=4.2, aspect=0.5),
}


def source_of(code: ImageCode) -> tuple[ImageCode, bool]:
    """(the view a code is rendered from, whether it is then mirrored): 5-7 come from 3-1."""
    if code.azimuth > 4:
        return ImageCode(code.kind, code.elevation, 8 - code.azimuth), True
    return ImageCode(code.kind, code.elevation, code.azimuth), False


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # (3,)
    right: np.ndarray  # image +x
    up: np.ndarray  # image +y (upwards)
    forward: np.ndarray  # viewing direction
    tan_x: float  # tan of half the horizontal field of view
    tan_y: float
    width: int
    height: int

    def scaled(self, factor: int) -> "Camera":
        """Same view, `factor` times the pixels (for supersampling)."""
        return Camera(self.position, self.right, self.up, self.forward, self.tan_x, self.tan_y,
                      self.width * factor, self.height * factor)

    def rays_at(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit ray directions through continuous pixel positions (x right, y down), float32."""
        x = ((np.asarray(px, np.float32) / self.width * 2 - 1) * self.tan_x).astype(np.float32)
        y = ((1 - np.asarray(py, np.float32) / self.height * 2) * self.tan_y).astype(np.float32)
        inv = 1.0 / np.sqrt(1.0 + x * x + y * y)
        f, r, u = ([float(c) for c in v] for v in (self.forward, self.right, self.up))
        return tuple((f[i] + x * r[i] + y * u[i]) * inv for i in range(3))  # type: ignore[return-value]

    def ray_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit ray directions through every pixel centre, as three (H, W) float32 arrays."""
        px, py = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        return self.rays_at(px, py)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) → camera coordinates (right, up, depth along forward)."""
        rel = np.asarray(points, float) - self.position
        return np.stack([rel @ self.right, rel @ self.up, rel @ self.forward], axis=-1)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) → (pixel xy (N, 2) in continuous pixel units, depth (N,))."""
        c = self.to_camera(points)
        px = (c[:, 0] / c[:, 2] / self.tan_x + 1) / 2 * self.width
        py = (1 - c[:, 1] / c[:, 2] / self.tan_y) / 2 * self.height
        return np.stack([px, py], axis=-1), c[:, 2]


def frame_size(set_: str, size: int) -> tuple[int, int]:
    """(width, height) in pixels for a set; `size` is the image height (long side)."""
    aspect = FRAMINGS[set_].aspect
    return int(round(size * aspect)), size


def camera_for(code: ImageCode | str, size: int = 1024, elevation_deg: float = 30.0) -> Camera:
    """The camera of a template code (5-7 too: for the symmetric figure it sees the mirror of 3-1)."""
    code = require_code(code) if isinstance(code, str) else code
    fr = FRAMINGS[code.kind]
    elev = math.radians({0: 0.0, 1: elevation_deg, 2: -elevation_deg}[code.elevation])
    azim = math.radians(45.0 * code.azimuth)
    target = np.array([0.0, fr.target_y, 0.0])
    # Counter-clockwise seen from above = positive rotation about +y, starting at +z (front).
    offset = np.array([math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)])
    position = target + fr.distance * offset
    forward = -offset
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    tan_y = fr.half_height / fr.distance
    width, height = frame_size(code.kind, size)
    return Camera(position, right, up, forward, tan_y * width / height, tan_y, width, height)
