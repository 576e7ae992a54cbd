"""A numpy ray caster for the mannequin: per-pixel depth, normal and part id.

Every primitive has a closed-form ray intersection (`primitives`); each one is tested only
inside the screen rectangle of its bounding sphere and the nearest hit wins (a z-buffer over
primitives). Normals are computed once per pixel for the winner, then given the fillets of a
smooth union (`_fillet`).

Anti-aliasing is adaptive: one ray per pixel, then `aa`×`aa` rays for the pixels on a
silhouette or occlusion edge only (a few per cent of the image). Maps shade every sample and
average them (`Buffers.resolve`), which equals full supersampling on those pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from charframe.templates.camera import Camera
from charframe.templates.mannequin import CARVE_FILLET, Mannequin
from charframe.templates.primitives import INF, Primitive, distance, fillet_weight, intersect, normals

EDGE_GAP = 0.01  # metres: a depth step this large between neighbours is an edge to anti-alias


@dataclass
class Samples:
    """Per-ray results: depth (…), normal (…, 3) in camera space, part id (…) (0 = background)."""

    depth: np.ndarray
    normal: np.ndarray
    part: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.part > 0


@dataclass
class Buffers(Samples):
    """What the camera sees, one ray per pixel (H, W), plus extra rays for the edge pixels.

    Background: depth = inf, normal = 0, part = 0. `edge` holds flat pixel indices (N,) and
    `sub` their `aa`² sub-pixel samples, shaped (N, aa²).
    """

    edge: np.ndarray | None = None
    sub: Samples | None = None

    def resolve(self, shade: Callable[..., np.ndarray], *extra: np.ndarray) -> np.ndarray:
        """Apply a per-sample shader and average the sub-samples of edge pixels into the image.

        `shade(depth, normal, mask, *extra)` must work elementwise on any leading shape; each
        `extra` is a per-pixel (H, W) array, broadcast to its pixel's sub-samples.
        """
        img = shade(self.depth, self.normal, self.mask, *extra).astype(np.float32)
        if self.edge is not None and self.sub is not None and len(self.edge):
            sub_extra = [e.reshape(-1)[self.edge][:, None] for e in extra]
            values = shade(self.sub.depth, self.sub.normal, self.sub.mask, *sub_extra).mean(axis=1)
            img.reshape(self.depth.size, -1)[self.edge] = values.reshape(len(self.edge), -1)
        return img


Rays = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Window:
    """Where one primitive can be hit: a pixel rectangle of the grid, or a subset of samples."""

    def __init__(self, shape: tuple[int, ...], rect: tuple[slice, slice] | None = None,
                 pick: np.ndarray | None = None) -> None:
        self.shape, self.rect, self.pick = shape, rect, pick

    def take(self, arr: np.ndarray) -> np.ndarray:
        if self.rect is not None:
            return arr[self.rect]
        return arr.reshape(-1, *arr.shape[len(self.shape):])[self.pick]

    def flat(self, sub: np.ndarray) -> np.ndarray:
        """Flat indices (into arr.reshape(-1)) of the window's elements selected by `sub`."""
        if self.rect is not None:
            rows, cols = np.nonzero(sub)
            return (rows + self.rect[0].start) * self.shape[1] + cols + self.rect[1].start
        return self.pick[sub]


def _screen_rect(p: Primitive, cam: Camera, pad: float = 0.0) -> tuple[slice, slice] | None:
    """Pixel rows/cols that can see `p` (projection of its bounding cube), or None if off-screen."""
    center, radius = p.bound()
    radius += pad
    corners = center + radius * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    xy, depth = cam.project(corners)
    if np.any(depth <= 1e-3):
        return slice(0, cam.height), slice(0, cam.width)
    x0, y0 = np.floor(xy.min(axis=0)).astype(int)
    x1, y1 = np.ceil(xy.max(axis=0)).astype(int) + 1
    x0, x1 = max(x0, 0), min(x1, cam.width)
    y0, y1 = max(y0, 0), min(y1, cam.height)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _windows(man: Mannequin, cam: Camera, shape, pix: np.ndarray | None, cull: bool,
             pad: float = 0.0, which: list[int] | None = None) -> list[_Window | None]:
    """One window per primitive (or per primitive in `which`), grown by `pad` metres.

    `pix` (M, 2) gives each sample's pixel (x, y) when the rays are not a full grid.
    """
    out: list[_Window | None] = []
    for prim in (man.primitives if which is None else [man.primitives[i] for i in which]):
        rect = _screen_rect(prim, cam, pad) if cull else (slice(0, cam.height), slice(0, cam.width))
        if rect is None:
            out.append(None)
        elif pix is None:
            out.append(_Window(shape, rect=rect))
        else:
            inside = ((pix[:, 1] >= rect[0].start) & (pix[:, 1] < rect[0].stop)
                      & (pix[:, 0] >= rect[1].start) & (pix[:, 0] < rect[1].stop))
            pick = np.flatnonzero(inside)
            out.append(_Window(shape, pick=pick) if len(pick) else None)
    return out


def _soft_rims(prim: Primitive, pts: np.ndarray, n: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Round off the rim of every carved dimple: blend with the other surface near the edge."""
    d_prim, g_prim = distance(prim, pts)
    for k, s in enumerate(prim.carve):
        rel = pts - np.asarray(s.center)
        dist = np.sqrt((rel * rel).sum(axis=1))
        wall = flag == k
        gap = np.where(wall, -d_prim, dist - s.radius)
        other = np.where(wall[:, None], g_prim, -rel / np.maximum(dist, 1e-12)[:, None])
        w = fillet_weight(np.abs(gap), CARVE_FILLET)[:, None]
        n = (1 - w) * n + w * other
    return n


def _trace(man: Mannequin, cam: Camera, rays: Rays, pix: np.ndarray | None, cull: bool,
           fillets: bool) -> Samples:
    """Nearest hits of `rays` (arrays of one shape; `pix` = their pixels unless a full grid)."""
    shape = rays[0].shape
    o = np.asarray(cam.position, float)
    tbuf = np.full(shape, INF, np.float32)
    owner = np.full(shape, -1, np.int16)
    carved = np.full(shape, -1, np.int8)
    wins = _windows(man, cam, shape, pix, cull)
    for k, (prim, win) in enumerate(zip(man.primitives, wins)):
        if win is None:
            continue
        t, flag = intersect(prim, tuple(win.take(c) for c in rays), o)
        closer = t < win.take(tbuf)
        idx = win.flat(closer)
        tbuf.reshape(-1)[idx] = t[closer]
        owner.reshape(-1)[idx] = k
        carved.reshape(-1)[idx] = flag[closer]

    flat_rays = np.stack([c.reshape(-1) for c in rays], axis=1)
    flat_t = tbuf.reshape(-1)
    o32 = o.astype(np.float32)
    normal = np.zeros((flat_t.size, 3), np.float32)
    part = np.zeros(flat_t.size, np.uint8)
    for k, (prim, win) in enumerate(zip(man.primitives, wins)):
        if win is None:
            continue
        idx = win.flat(win.take(owner) == k)
        if not len(idx):
            continue
        pts = o32 + flat_t[idx, None] * flat_rays[idx]
        n = normals(prim, pts, carved.reshape(-1)[idx])
        normal[idx] = _soft_rims(prim, pts, n, carved.reshape(-1)[idx]) if prim.carve else n
        part[idx] = man.part_id(prim.part)
    if fillets:
        _fillet(man, cam, o, flat_rays, flat_t, owner.reshape(-1), normal, shape, pix, cull)
    normal /= np.maximum(np.sqrt(np.einsum("ij,ij->i", normal, normal)), 1e-12)[:, None]

    cam_axes = np.stack([cam.right, cam.up, -np.asarray(cam.forward)]).astype(np.float32)
    normal = (normal @ cam_axes.T).reshape(*shape, 3)
    depth = tbuf * (flat_rays @ np.asarray(cam.forward, np.float32)).reshape(shape)
    return Samples(depth=depth.astype(np.float32), normal=normal, part=part.reshape(shape))


def _fillet(man: Mannequin, cam: Camera, o: np.ndarray, flat_rays: np.ndarray, flat_t: np.ndarray,
            owner: np.ndarray, normal: np.ndarray, shape, pix, cull: bool) -> None:
    """Give the normals the fillets of a smooth union of the bodies, in place (unnormalised).

    For smin(a, b) the gradient is (1 − w)·∇a + w·∇b (see `fillet_weight`), i.e. ∇a + w/(1 − w)·∇b
    up to length. A hit lies on its owner's surface (a = 0), so every other body B adds
    w/(1 − w)·∇B with w from B's distance there and B's own radius. On a crease both sides get
    ½·(∇A + ∇B) whatever the radii, so the shading is continuous. Depth and silhouette stay
    those of the plain union (at most radius/4 from the smooth one).
    """
    body_of = np.full(len(man.primitives) + 1, -1, np.int16)  # index −1 (background) stays −1
    bodies = man.bodies()
    for b, (_, members) in enumerate(bodies):
        body_of[members] = b
    o32 = o.astype(np.float32)
    for b, (radius, members) in enumerate(bodies):
        wins = [w for w in _windows(man, cam, shape, pix, cull, radius, members) if w is not None]
        if not wins:
            continue
        win = _merge(wins, shape)
        own = body_of[win.take(owner.reshape(shape))]
        idx = win.flat((own >= 0) & (own != b))
        if not len(idx):
            continue
        pts = o32 + flat_t[idx, None] * flat_rays[idx]
        best = np.full(len(idx), np.inf, np.float32)
        grad = np.zeros((len(idx), 3), np.float32)
        for j in members:
            center, bound = man.primitives[j].bound()
            rel = pts - center.astype(np.float32)
            near = np.einsum("ij,ij->i", rel, rel) < (bound + radius) ** 2
            if not near.any():
                continue
            d, g = distance(man.primitives[j], pts[near])
            sel = np.flatnonzero(near)[d < best[near]]
            closer = d < best[near]
            best[sel], grad[sel] = d[closer], g[closer]
        w = fillet_weight(np.maximum(best, 0), radius)
        hit = w > 0
        normal[idx[hit]] += (w[hit] / (1 - w[hit]))[:, None] * grad[hit]


def _merge(wins: list[_Window], shape) -> _Window:
    """One window covering several (bounding rectangle, or union of sample picks)."""
    if wins[0].rect is not None:
        rects = [w.rect for w in wins]
        return _Window(shape, rect=(slice(min(r[0].start for r in rects), max(r[0].stop for r in rects)),
                                    slice(min(r[1].start for r in rects), max(r[1].stop for r in rects))))
    mark = np.zeros(int(np.prod(shape)), bool)
    for w in wins:
        mark[w.pick] = True
    return _Window(shape, pick=np.flatnonzero(mark))


def _edge_pixels(s: Samples) -> np.ndarray:
    """Flat indices of pixels next to a silhouette or a depth step (dilated by one pixel)."""
    z = np.where(s.mask, s.depth, np.float32(1e6))
    edge = np.zeros(z.shape, np.uint8)
    for axis in (0, 1):
        step = np.abs(np.diff(z, axis=axis)) > EDGE_GAP
        lo = [slice(None)] * 2
        lo[axis] = slice(None, -1)
        edge[tuple(lo)] |= step
        hi = [slice(None)] * 2
        hi[axis] = slice(1, None)
        edge[tuple(hi)] |= step
    edge = cv2.dilate(edge, np.ones((3, 3), np.uint8))
    return np.flatnonzero(edge)


def render(man: Mannequin, cam: Camera, aa: int = 3, cull: bool = True, fillets: bool = True) -> Buffers:
    """Ray-cast `man` through every pixel of `cam`, with `aa`×`aa` samples on edge pixels.

    `cull=False` tests every primitive at every pixel (the reference the benchmark compares
    with); `fillets=False` keeps the hard creases of the plain union in the normals.
    """
    grid = _trace(man, cam, cam.ray_grid(), None, cull, fillets)
    if aa <= 1:
        return Buffers(grid.depth, grid.normal, grid.part)
    edge = _edge_pixels(grid)
    rows, cols = np.divmod(edge, cam.width)
    offsets = (np.arange(aa) + 0.5) / aa - 0.5
    ox, oy = (v.reshape(-1) for v in np.meshgrid(offsets, offsets))
    sx = cols[:, None] + 0.5 + ox[None, :]  # continuous pixel coordinates of each sample
    sy = rows[:, None] + 0.5 + oy[None, :]
    rays = cam.rays_at(sx, sy)
    pix = np.stack([np.repeat(cols, aa * aa), np.repeat(rows, aa * aa)], axis=1)
    sub = _trace(man, cam, rays, pix, cull, fillets)
    return Buffers(grid.depth, grid.normal, grid.part, edge=edge, sub=sub)
