"""OpenPose (COCO-18) keypoints from the mannequin's joints, drawn with controlnet_aux's own painter.

Each joint is projected through the camera; it counts as visible when it lies in the frame, on
the silhouette, and one exact ray to it says no other body part covers it (see `keypoints`):
a shoulder sits inside its own shoulder, the far shoulder in a profile sits behind the near
arm. The drawing is controlnet_aux's
`draw_bodypose` on a canvas with a 512 px short side, scaled to the output size the way the
annotator scales its own detections, so the stick widths and colours are the ones the openpose
ControlNet was trained on.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from charframe.templates.camera import Camera
from charframe.templates.mannequin import Mannequin
from charframe.templates.primitives import intersect
from charframe.templates.render import Buffers

#: COCO-18 order as used by OpenPose and controlnet_aux ("r" = the figure's own right).
COCO18 = (
    "nose", "neck",
    "shoulder_r", "elbow_r", "wrist_r", "shoulder_l", "elbow_l", "wrist_l",
    "hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l",
    "eye_r", "eye_l", "ear_r", "ear_l",
)
#: Index of each keypoint's left/right counterpart (itself for nose and neck).
SWAP = tuple(COCO18.index(n[:-1] + ("l" if n.endswith("r") else "r")) if n[-2:] in ("_l", "_r") else i
             for i, n in enumerate(COCO18))

Keypoints = list[tuple[float, float] | None]  # normalised (x, y) in [0, 1), None = not visible

DRAW_SHORT_SIDE = 512


#: Parts a joint sits in: a body joint is visible when the first surface on its ray is one of
#: these ("{s}" = the joint's side). Face points instead need nothing more than 2 cm in front.
OWN_PARTS = {
    "neck": ("neck", "torso", "chest", "head", "shoulder_l", "shoulder_r"),
    "shoulder": ("shoulder_{s}", "upper_arm_{s}", "torso", "chest", "neck"),
    "elbow": ("upper_arm_{s}", "forearm_{s}"),
    "wrist": ("forearm_{s}", "hand_{s}"),
    "hip": ("pelvis", "thigh_{s}", "torso"),
    "knee": ("thigh_{s}", "shin_{s}"),
    "ankle": ("shin_{s}", "foot_{s}"),
}
ARMS = ("upper_arm_l", "forearm_l", "hand_l", "upper_arm_r", "forearm_r", "hand_r")
SEE_THROUGH_ARMS = ("neck", "hip", "knee", "ankle")  # an arm hanging in front hides no trunk joint
FACE_SLACK = 0.02


def _first_hits(man: Mannequin, cam: Camera, points: np.ndarray, skip: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(distance, part name index) of the first surface on the ray to each point, ignoring `skip`."""
    o = np.asarray(cam.position, float)
    d = points - o
    dist = np.linalg.norm(d, axis=1)
    rays = tuple((d[:, i] / dist).astype(np.float32) for i in range(3))
    best = np.full(len(points), np.inf)
    part = np.full(len(points), -1)
    for prim in man.primitives:
        if prim.part in skip:
            continue
        t, _ = intersect(prim, rays, o)  # type: ignore[arg-type]
        closer = t < best
        best[closer], part[closer] = t[closer], man.parts.index(prim.part)
    return best, part


def keypoints(man: Mannequin, cam: Camera, buf: Buffers) -> Keypoints:
    """Visible COCO-18 keypoints of `man` seen by `cam`; `buf` must be rendered with `cam`."""
    pos = np.array([man.joints[n].position for n in COCO18], float)
    xy, _ = cam.project(pos)
    dist = np.linalg.norm(pos - cam.position, axis=1)
    hit_all, part_all = _first_hits(man, cam, pos, set())
    hit_body, part_body = _first_hits(man, cam, pos, set(ARMS))
    h, w = buf.depth.shape
    out: Keypoints = []
    for i, name in enumerate(COCO18):
        x, y = xy[i, 0] / cam.width, xy[i, 1] / cam.height
        if not (0 <= x < 1 and 0 <= y < 1 and buf.mask[int(y * h), int(x * w)]):
            out.append(None)
            continue
        kind, _, side = name.partition("_")
        if kind not in OWN_PARTS:  # nose, eyes, ears lie on the surface
            visible = hit_all[i] >= dist[i] - FACE_SLACK
        else:
            part = (part_body if kind in SEE_THROUGH_ARMS else part_all)[i]
            own = {p.format(s=side) for p in OWN_PARTS[kind]}
            visible = part >= 0 and man.parts[part] in own
        out.append((float(x), float(y)) if visible else None)
    return out


def mirror_keypoints(points: Keypoints) -> Keypoints:
    """Keypoints of the horizontally mirrored image: x flips and left/right swap roles."""
    return [None if points[SWAP[i]] is None else (1.0 - points[SWAP[i]][0], points[SWAP[i]][1])
            for i in range(len(points))]


def preload() -> None:
    """Import the painter ahead of time (it takes seconds: controlnet_aux imports torch)."""
    _painter()


def _painter():
    with warnings.catch_warnings():  # importing controlnet_aux pulls in torch/timm and their warnings
        warnings.simplefilter("ignore")
        from controlnet_aux.open_pose.body import Keypoint
        from controlnet_aux.open_pose.util import draw_bodypose
    return Keypoint, draw_bodypose


def draw(points: Keypoints, width: int, height: int) -> np.ndarray:
    """The OpenPose control image (H, W, 3) uint8: standard limb colours on black."""
    Keypoint, draw_bodypose = _painter()
    scale = DRAW_SHORT_SIDE / min(width, height)
    cw, ch = int(round(width * scale)), int(round(height * scale))
    canvas = np.zeros((ch, cw, 3), np.uint8)
    kps = [None if p is None else Keypoint(p[0], p[1]) for p in points]
    canvas = draw_bodypose(canvas, kps)
    if (cw, ch) != (width, height):
        canvas = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)
    return canvas
