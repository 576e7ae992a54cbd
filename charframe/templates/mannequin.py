"""The procedural mannequin: a neutral anime-proportioned humanoid as analytic primitives.

The figure is a union of ellipsoids and rounded cones (convex hulls of two spheres), the shapes
an artist's doll is carved from; eye sockets and the navel are spheres carved out of them.
Every primitive has a closed-form ray intersection, which is what makes the numpy renderer
fast. Primitives are grouped into bodies (the trunk, a thigh, a breast …); where bodies meet,
the shading follows a smooth union with each body's fillet radius (`BODY_FILLETS`), so the
figure reads as one clay surface rather than a jointed doll. Named joints feed OpenPose.

World frame (metres): y up, the figure faces +z, +x is the figure's LEFT; feet on y = 0,
crown at 1.60 (6.7 heads: anime proportions). Only the figure's left half is written down;
the right half is its exact mirror, so views 5-7 are exact mirrors of views 3-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from charframe.templates.primitives import Cone, Ellipsoid, Primitive, Sphere, Vec, surface_point

#: How far each body's surface reaches into its neighbours' shading (smooth-union radius, m).
#: Segments of one body (a chain of cones with no inward crease) share a single hard surface.
BODY_FILLETS: dict[str, float] = {
    "head": 0.020, "nose": 0.005, "ear": 0.004, "neck": 0.020,
    "hips": 0.040, "trunk": 0.040, "breast": 0.030, "glute": 0.030, "shoulder": 0.020,
    "arm": 0.020, "hand": 0.008, "thumb": 0.006,
    "leg": 0.025, "calf": 0.020, "foot": 0.012, "instep": 0.012,
}
CARVE_FILLET = 0.004  # soft rims for the eye sockets and the navel


@dataclass(frozen=True)
class Joint:
    position: Vec
    radius: float  # body thickness around the joint: how deep inside the surface it sits


@dataclass
class Mannequin:
    primitives: list[Primitive]
    joints: dict[str, Joint]
    parts: list[str] = field(default_factory=list)  # part id = index + 1 (0 = background)

    def part_id(self, name: str) -> int:
        return self.parts.index(name) + 1

    def bodies(self) -> list[tuple[float, list[int]]]:
        """(fillet radius, member primitive indices) of every body."""
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(self.primitives):
            groups.setdefault(p.body or p.part, []).append(i)
        return [(BODY_FILLETS[_base(name)], members) for name, members in groups.items()]


def _base(name: str) -> str:
    return name[:-2] if name[-2:] in ("_l", "_r") else name


def rot(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> tuple[tuple[float, ...], ...]:
    """Rotation matrix (degrees): roll about z, then pitch about x, then yaw about y."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return tuple(map(tuple, ry @ rx @ rz))


def _mx(p: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-p[0], p[1], p[2])


def _mirror_name(name: str) -> str:
    """ear_l ↔ ear_r; names without a side stay."""
    swap = {"_l": "_r", "_r": "_l"}
    return name[:-2] + swap[name[-2:]] if name[-2:] in swap else name


def _on(body: str, *prims: Primitive) -> list[Primitive]:
    """Put primitives into a named body."""
    return [replace(p, body=body) for p in prims]


def mirror(prim: Primitive) -> Primitive:
    """The primitive reflected through the x = 0 plane, renamed left → right."""
    part, body = _mirror_name(prim.part), _mirror_name(prim.body)
    carve = tuple(Sphere(_mx(s.center), s.radius) for s in prim.carve)
    if isinstance(prim, Cone):
        return replace(prim, part=part, body=body, a=_mx(prim.a), b=_mx(prim.b), carve=carve)
    m = np.diag([-1.0, 1.0, 1.0])
    rotation = tuple(map(tuple, m @ np.asarray(prim.rotation) @ m))
    return replace(prim, part=part, body=body, center=_mx(prim.center), rotation=rotation, carve=carve)


def _along(p, direction, length) -> Vec:
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    return tuple(float(v) for v in np.asarray(p) + d * length)  # type: ignore[return-value]


def _dimple(p: Primitive, x: float, y: float, radius: float, depth: float) -> Sphere:
    """A sphere that carves a dimple `depth` deep into the front of `p` at (x, y)."""
    hit = surface_point(p, x, y)
    assert hit is not None, (p, x, y)
    point, n = hit
    return Sphere(_vec(point + n * (radius - depth)), radius)


def _vec(v) -> Vec:
    return (float(v[0]), float(v[1]), float(v[2]))


TRUNK = (1.0, 1.0, 0.68)  # the trunk's cross-section: 68 % as deep as it is wide


def _left_half() -> tuple[list[Primitive], list[Primitive], dict[str, Joint]]:
    """(centre primitives, left-side primitives, left-side + centre joints)."""
    centre: list[Primitive] = []
    left: list[Primitive] = []

    # Head: one egg from the round cranium to a small chin (V jaw, anime face), shallow eye
    # sockets low in the face, a small nose, ears.
    head = Cone("head", (0.0, 1.490, -0.012), (0.0, 1.388, 0.032), 0.098, 0.033, (0.93, 1.0, 1.0))
    eye_x, eye_y = 0.034, 1.446
    sockets = tuple(_dimple(head, x, eye_y, 0.026, 0.0025) for x in (eye_x, -eye_x))
    centre.append(replace(head, carve=sockets))
    eye = surface_point(centre[0], eye_x, eye_y)[0]  # type: ignore[index]
    nose_root = surface_point(head, 0.0, 1.424)[0]  # type: ignore[index]
    nose = Ellipsoid("nose", _vec(nose_root + (0.0, 0.0, -0.003)), (0.0065, 0.011, 0.0085), rotation=rot(pitch=-30))
    centre.append(nose)
    nose_tip = surface_point(nose, 0.0, 1.419)[0]  # type: ignore[index]
    ear_y, ear_z = 1.444, -0.016
    ear = _vec(surface_point(head, 0.0, ear_y, ear_z)[0] + (0.002, 0.0, 0.0))  # type: ignore[index]
    left.append(Ellipsoid("ear_l", ear, (0.010, 0.025, 0.016), rotation=rot(yaw=12, pitch=-10, roll=3)))

    # Neck and trunk: a chain of squashed rounded cones (hips → waist → ribs → upper chest).
    centre.append(Cone("neck", (0.0, 1.410, -0.020), (0.0, 1.280, -0.010), 0.031, 0.038))
    hips, waist, ribs, top = (0.0, 0.850, -0.010), (0.0, 0.990, -0.006), (0.0, 1.150, -0.004), (0.0, 1.252, -0.010)
    # The waist is an inward crease, so hips and trunk are two bodies with a fillet between.
    centre += _on("hips", Cone("pelvis", (0.0, 0.780, -0.010), hips, 0.112, 0.136, TRUNK),
                  Cone("pelvis", hips, waist, 0.136, 0.100, TRUNK))
    belly = Cone("torso", waist, ribs, 0.100, 0.120, TRUNK)
    centre += _on("trunk", replace(belly, carve=(_dimple(belly, 0.0, 0.962, 0.010, 0.005),)),
                  Cone("torso", ribs, top, 0.120, 0.104, TRUNK))
    left += _on("breast_l", Ellipsoid("chest", (0.050, 1.126, 0.034), (0.052, 0.047, 0.040),
                                      rotation=rot(yaw=16, pitch=8)))
    left += _on("shoulder_l", Cone("shoulder_l", (0.022, 1.275, -0.016), (0.128, 1.250, -0.014), 0.046, 0.041))
    left += _on("glute_l", Ellipsoid("pelvis", (0.052, 0.815, -0.036), (0.068, 0.078, 0.060)))

    # Arm: relaxed A-pose, about 24 degrees out from the body, a slight bend at the elbow.
    shoulder = (0.138, 1.246, -0.014)
    elbow = _along(shoulder, (0.40, -0.915, 0.02), 0.245)
    wrist = _along(elbow, (0.34, -0.925, 0.15), 0.215)
    left += _on("arm_l", Cone("upper_arm_l", shoulder, elbow, 0.043, 0.031),
                Cone("forearm_l", elbow, wrist, 0.031, 0.022))
    hand_dir = np.array((0.30, -0.94, 0.14))
    hand_dir /= np.linalg.norm(hand_dir)
    fist_c = _along(wrist, hand_dir, 0.046)
    roll = math.degrees(math.atan2(hand_dir[0], -hand_dir[1]))
    left.append(Ellipsoid("hand_l", fist_c, (0.025, 0.044, 0.036), rotation=rot(roll=roll)))
    left += _on("thumb_l", Ellipsoid("hand_l", _along(fist_c, (-0.35, 0.35, 1.0), 0.030), (0.012, 0.024, 0.012),
                                     rotation=rot(pitch=-25, roll=roll)))

    # Leg: long anime legs (thigh, shin with a calf muscle), feet slightly apart, turned out.
    hip = (0.074, 0.835, 0.0)
    knee = (0.078, 0.455, 0.006)
    ankle = (0.084, 0.072, -0.010)
    left += _on("leg_l", Cone("thigh_l", (0.062, 0.862, -0.006), knee, 0.075, 0.045),
                Cone("shin_l", knee, ankle, 0.045, 0.026))
    left += _on("calf_l", Ellipsoid("shin_l", (0.080, 0.345, -0.014), (0.036, 0.090, 0.036)))
    left.append(Cone("foot_l", (0.084, 0.036, -0.030), (0.100, 0.026, 0.125), 0.034, 0.026, (1.0, 0.72, 1.0)))
    left += _on("instep_l", Cone("foot_l", ankle, (0.095, 0.040, 0.080), 0.027, 0.024))

    joints = {
        "nose": Joint(_vec(nose_tip), 0.012),
        "eye_l": Joint(_vec(eye), 0.012),
        "ear_l": Joint(_vec(np.asarray(ear) + (0.003, 0.0, 0.0)), 0.014),
        "shoulder_l": Joint(shoulder, 0.050),
        "elbow_l": Joint(elbow, 0.035),
        "wrist_l": Joint(wrist, 0.028),
        "hip_l": Joint(hip, 0.085),
        "knee_l": Joint(knee, 0.050),
        "ankle_l": Joint(ankle, 0.035),
    }
    return centre, left, joints


def build_mannequin() -> Mannequin:
    """The default figure, exactly symmetric about x = 0."""
    centre, left, joints = _left_half()
    prims = centre + left + [mirror(p) for p in left]
    all_joints = dict(joints)
    for name, j in joints.items():
        if name.endswith("_l"):
            all_joints[name[:-2] + "_r"] = Joint(_mx(j.position), j.radius)
    sl, sr = np.array(all_joints["shoulder_l"].position), np.array(all_joints["shoulder_r"].position)
    all_joints["neck"] = Joint(tuple(float(v) for v in (sl + sr) / 2), 0.12)
    parts: list[str] = []
    for p in prims:
        if p.part not in parts:
            parts.append(p.part)
    return Mannequin(prims, all_joints, parts)
