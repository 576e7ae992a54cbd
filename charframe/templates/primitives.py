"""Analytic solids with closed-form ray intersections: ellipsoids and rounded cones.

A rounded cone is the convex hull of two spheres; squashed along world axes it gives limbs and a
trunk with elliptic cross-sections, and a big-sphere-to-small-sphere cone makes an egg-shaped
anime head with a V chin. Either solid may have spheres carved out of it (eye sockets, navel).

Rays are o + t·d for one origin `o` (the camera centre) and many directions, passed as three
same-shaped float32 arrays; all per-primitive constants are scalars, so each test is a few
array operations. t is returned as float32 with inf where a ray misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INF = np.float32(np.inf)
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

Vec = tuple[float, float, float]
Rays = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Sphere:
    center: Vec
    radius: float


@dataclass(frozen=True)
class Ellipsoid:
    part: str
    center: Vec
    radii: Vec
    rotation: tuple[tuple[float, ...], ...] = IDENTITY  # columns = local axes in world space
    carve: tuple[Sphere, ...] = ()
    body: str = ""  # smooth-union group (default: the part); see mannequin.BODY_FILLETS

    def bound(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center, float), max(self.radii)


@dataclass(frozen=True)
class Cone:
    """Rounded cone: hull of sphere (a, ra) and sphere (b, rb), optionally squashed.

    `a` and `b` are world points. `scale` makes the cross-section elliptic: the hull is built in
    coordinates divided by `scale` (about the world origin) and stretched back, so (1, 1, 0.7)
    gives a trunk 70 % as deep as wide; the radii are measured before that stretch. Segments
    that share an end point then share exactly the same (squashed) sphere.
    """

    part: str
    a: Vec
    b: Vec
    ra: float
    rb: float
    scale: Vec = (1.0, 1.0, 1.0)
    carve: tuple[Sphere, ...] = ()
    body: str = ""

    def bound(self) -> tuple[np.ndarray, float]:
        a, b, scale = np.asarray(self.a), np.asarray(self.b), np.asarray(self.scale)
        radius = float(np.linalg.norm((b - a) / scale)) / 2 + max(self.ra, self.rb)
        return (a + b) / 2, float(scale.max()) * radius


Primitive = Ellipsoid | Cone


def _dot(d: Rays, v) -> np.ndarray:
    return d[0] * float(v[0]) + d[1] * float(v[1]) + d[2] * float(v[2])


def _sphere_hits(d: Rays, o: np.ndarray, center, radius: float,
                 dd: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(entry t, exit t) of rays o + t·d (dd = d·d when d is not unit length).

    Solved about the ray's closest approach to the centre, which keeps float32 precise for
    small spheres far from the camera.
    """
    co = np.asarray(center, float) - o
    tc = _dot(d, co) / dd
    px, py, pz = (d[i] * tc - float(co[i]) for i in range(3))  # closest point − centre
    disc = float(radius * radius) - (px * px + py * py + pz * pz)
    hit = disc > 0
    half = np.sqrt(np.where(hit, disc, 0) / dd)
    return np.where(hit, tc - half, INF), np.where(hit, tc + half, -INF)


def _ellipsoid_hits(e: Ellipsoid, d: Rays, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(e.rotation, float)
    radii = np.asarray(e.radii, float)
    m = r / radii[None, :]  # world direction → unit-sphere frame
    op = (r.T @ (o - np.asarray(e.center))) / radii
    dp = [_dot(d, m[:, j]) for j in range(3)]
    a = dp[0] * dp[0] + dp[1] * dp[1] + dp[2] * dp[2]
    tc = -(dp[0] * float(op[0]) + dp[1] * float(op[1]) + dp[2] * float(op[2])) / a
    px, py, pz = (float(op[j]) + dp[j] * tc for j in range(3))  # closest approach in the unit frame
    disc = 1.0 - (px * px + py * py + pz * pz)
    hit = disc > 0
    half = np.sqrt(np.where(hit, disc, 0) / a)
    return np.where(hit, tc - half, INF), np.where(hit, tc + half, -INF)


@dataclass(frozen=True)
class _Frame:
    """A cone in its unsquashed coordinates (world / scale)."""

    a: np.ndarray
    b: np.ndarray
    u: np.ndarray  # unit axis a → b
    length: float
    s: float  # sine of the half-angle of the tangent cone
    co: float  # its cosine
    inv: np.ndarray  # 1 / scale


def _cone_frame(c: Cone, dtype=np.float64) -> _Frame:
    inv = 1.0 / np.asarray(c.scale, float)
    a, b = np.asarray(c.a, float) * inv, np.asarray(c.b, float) * inv
    length = float(np.linalg.norm(b - a))
    s = (c.ra - c.rb) / length
    cast = (lambda v: v.astype(dtype))
    return _Frame(cast(a), cast(b), cast((b - a) / length), length, s, math.sqrt(1 - s * s), cast(inv))


def _cone_hits(c: Cone, d: Rays, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = _cone_frame(c)
    dd: np.ndarray | float = 1.0
    if np.any(f.inv != 1.0):  # unsquash: a linear map leaves the ray parameter t unchanged
        o = o * f.inv
        d = (d[0] * float(f.inv[0]), d[1] * float(f.inv[1]), d[2] * float(f.inv[2]))
        dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    a0, a1 = _sphere_hits(d, o, f.a, c.ra, dd)
    b0, b1 = _sphere_hits(d, o, f.b, c.rb, dd)
    t0, t1 = np.minimum(a0, b0), np.maximum(a1, b1)
    # Side: rho·cos + h·sin = ra, h along the axis from a, rho the distance from the axis.
    s, oq = f.s, o - f.a
    ho, oo = float(oq @ f.u), float(oq @ oq)
    c2, k = f.co * f.co, c.ra - ho * s
    hd, od = _dot(d, f.u), _dot(d, oq)
    qa = c2 * dd - hd * hd
    qb = c2 * (od - ho * hd) + s * hd * k
    qc = c2 * (oo - ho * ho) - k * k
    disc = qb * qb - qa * qc
    ok = (disc > 0) & (np.abs(qa) > 1e-9)
    sq = np.sqrt(np.where(ok, disc, 0))
    qa_safe = np.where(ok, qa, 1)
    lo, hi = c.ra * s, f.length + c.rb * s
    for sign in (-1.0, 1.0):
        root = (-qb + sign * sq) / qa_safe
        h = ho + root * hd
        valid = ok & (h >= lo) & (h <= hi)
        t0 = np.where(valid & (root < t0), root, t0)
        t1 = np.where(valid & (root > t1), root, t1)
    return t0, t1


def intersect(p: Primitive, d: Rays, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t of the first hit, carve flag) per ray: flag k ≥ 0 when the hit is the wall of carve k.

    The camera is outside every solid, so the first hit is the entry point (or, inside a carved
    sphere, the sphere's far wall if that is still inside the solid).
    """
    t0, t1 = _ellipsoid_hits(p, d, o) if isinstance(p, Ellipsoid) else _cone_hits(p, d, o)
    flag = np.full(t0.shape, -1, np.int8)
    for k, s in enumerate(p.carve):
        s0, s1 = _sphere_hits(d, o, s.center, s.radius)
        inside = (s0 < t0) & (t0 < s1)
        wall = inside & (s1 < t1)
        t0 = np.where(wall, s1, np.where(inside, INF, t0))
        flag[wall] = k
    t0 = np.where(t0 > 0, t0, INF)
    return t0.astype(np.float32, copy=False), flag


def normals(p: Primitive, pts: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Outward unit normals (N, 3) at surface points (N, 3) of `p` (flag: from `intersect`)."""
    dt = pts.dtype
    if isinstance(p, Ellipsoid):
        r = np.asarray(p.rotation, dt)
        n = ((pts - np.asarray(p.center, dt)) @ r / np.asarray(p.radii, dt) ** 2) @ r.T
    else:
        f = _cone_frame(p, dt)
        q = pts * f.inv - f.a
        h = q @ f.u
        radial = q - h[:, None] * f.u
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-12)
        n = f.co * radial + f.s * f.u
        cap_a, cap_b = h < p.ra * f.s, h > f.length + p.rb * f.s
        n[cap_a] = q[cap_a]
        n[cap_b] = q[cap_b] - (f.b - f.a)
        n = n * f.inv  # normals map by the inverse transpose of the squash
    for k, s in enumerate(p.carve):
        sel = flag == k
        n[sel] = np.asarray(s.center, dt) - pts[sel]
    return _unit(n)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.einsum("ij,ij->i", v, v)), 1e-12)[:, None]


def surface_point(p: Primitive, x: float, y: float, z: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where a ray first meets `p`, and the normal there: travelling along −z at (x, y), or,
    when `z` is given, along −x at height y and depth z (to find a side, e.g. for the ears)."""
    if z is None:
        o, direction = np.array([x, y, 10.0]), np.array([0.0, 0.0, -1.0])
    else:
        o, direction = np.array([10.0, y, z]), np.array([-1.0, 0.0, 0.0])
    d = tuple(np.array([v], np.float32) for v in direction)
    t, flag = intersect(p, d, o)  # type: ignore[arg-type]
    if not np.isfinite(t[0]):
        return None
    pt = o + float(t[0]) * direction
    return pt, normals(p, pt[None, :], flag)[0]


def distance(p: Primitive, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signed distance, unit gradient) of the solid (without carving) at points (N, 3).

    Exact for round cones; the usual first-order estimate for ellipsoids and squashed cones,
    which is all the fillet weights need (they only look within a few centimetres).
    """
    dt = pts.dtype
    if isinstance(p, Ellipsoid):
        r = np.asarray(p.rotation, dt)
        radii = np.asarray(p.radii, dt)
        q = (pts - np.asarray(p.center, dt)) @ r
        qr = q / radii
        k0 = np.sqrt(np.einsum("ij,ij->i", qr, qr))
        g = qr / radii
        k1 = np.maximum(np.sqrt(np.einsum("ij,ij->i", g, g)), 1e-12)
        return k0 * (k0 - 1) / k1, _unit(g @ r.T)
    f = _cone_frame(p, dt)
    s, co, u = f.s, f.co, f.u
    q = pts * f.inv - f.a
    h = q @ u
    radial = q - h[:, None] * u
    rho = np.sqrt(np.einsum("ij,ij->i", radial, radial))
    radial /= np.maximum(rho, 1e-12)[:, None]
    # Position along the side's generating line, from its tangent point on sphere a (0) to b (1).
    tau = ((rho - p.ra * co) * -s + (h - p.ra * s) * co) / (f.length * co)
    to_b = q - f.length * u
    nb = np.sqrt(np.einsum("ij,ij->i", to_b, to_b))
    na = np.sqrt(np.einsum("ij,ij->i", q, q))
    d = np.where(tau < 0, na - p.ra, np.where(tau > 1, nb - p.rb, rho * co + h * s - p.ra))
    grad = np.where((tau < 0)[:, None], q, np.where((tau > 1)[:, None], to_b, co * radial + s * u))
    return d / float(f.inv.max()), _unit(grad * f.inv)


def fillet_weight(gap: np.ndarray, radius: float) -> np.ndarray:
    """Weight of the other surface in the gradient of a polynomial smooth-min of blend `radius`.

    For smin(a, b) with a < b and gap = b − a: ∇smin = (1 − w)·∇a + w·∇b with
    w = max(radius − gap, 0) / (2·radius): ½ on the crease, 0 once the surfaces are `radius` apart.
    """
    return np.maximum(radius - gap, 0.0) / (2.0 * radius)
