"""Geometry of the template renders: framing, angles, conventions, map consistency, mirrors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from charframe.dataset.naming import require_code
from charframe.templates import primitives as P
from charframe.templates.writer import render_code
from charframe.templates.camera import camera_for
from charframe.templates.writer import render_source
from charframe.templates.mannequin import build_mannequin, mirror
from charframe.templates.openpose import COCO18, draw, keypoints, mirror_keypoints
from charframe.templates.render import render

SIZE = 256
CODES = [f"{k}{e}{d}" for k in "fb" for e in range(3) for d in range(5)]


@pytest.fixture(scope="module")
def man():
    return build_mannequin()


@pytest.fixture(scope="module")
def views(man):
    """code → (images, keypoints, buffers) for all 30 rendered codes at 256 px."""
    out = {}
    for code in CODES:
        cam = camera_for(code, SIZE)
        images, points = render_source(require_code(code), SIZE, man=man, draw_pose=False)
        out[code] = (images, points, render(man, cam, aa=1))
    return out


def bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(top, bottom, left, right) of mask > 127 as fractions of the image size."""
    rows, cols = np.nonzero(mask > 127)
    h, w = mask.shape
    return rows.min() / h, (rows.max() + 1) / h, cols.min() / w, (cols.max() + 1) / w


def test_figure_is_exactly_symmetric(man):
    def canon(p):  # carve order is immaterial
        return replace(p, carve=tuple(sorted(p.carve, key=lambda s: s.center)))

    names = {p.part for p in man.primitives}
    assert {canon(mirror(p)) for p in man.primitives} == {canon(p) for p in man.primitives}
    assert {"head", "nose", "ear_l", "ear_r", "neck", "hand_l", "foot_r"} <= names
    # anime proportions: head (chin to crown) 1/6 to 1/7 of the height
    head = [p for p in man.primitives if p.part == "head"][0]
    crown = head.a[1] + head.ra
    chin = head.b[1] - head.rb
    assert 6.0 <= crown / (crown - chin) <= 7.2


@pytest.mark.parametrize("code", CODES)
def test_silhouette_bbox_and_area_per_angle(views, code):
    mask = views[code][0]["mask"]
    top, bottom, left, right = bbox(mask)
    area = (mask > 127).mean()
    if code[0] == "f":  # bust shot: head at the top, chest cut by the lower edge
        assert 0.02 <= top <= 0.2
        assert bottom == 1.0
        assert (mask[-1] > 127).mean() > 0.15  # the chest fills the lower edge
        assert 0.2 <= area <= 0.6
    else:  # full figure with a margin all round
        assert 0.02 <= top and bottom <= 0.98 and 0.02 <= left and right <= 0.98
        assert bottom - top >= 0.7
        assert 0.08 <= area <= 0.3


def test_side_views_are_narrower_than_front(views):
    for e in range(3):
        front = bbox(views[f"b{e}0"][0]["mask"])
        side = bbox(views[f"b{e}2"][0]["mask"])
        assert (side[3] - side[2]) < 0.6 * (front[3] - front[2])
        assert (views[f"b{e}2"][0]["mask"] > 127).sum() < (views[f"b{e}0"][0]["mask"] > 127).sum()


def test_head_is_in_the_upper_half_of_f(views, man):
    for e in range(3):
        buf = views[f"f{e}0"][2]
        rows = np.nonzero(buf.part == man.part_id("head"))[0]
        assert rows.max() < 0.55 * SIZE


def _world_up(buf, cam) -> np.ndarray:
    """World-space y of each pixel's normal (camera-space normal back to world)."""
    n = buf.normal
    return n[..., 0] * cam.right[1] + n[..., 1] * cam.up[1] - n[..., 2] * cam.forward[1]


@pytest.mark.parametrize("d", [0, 2, 4])
def test_from_above_shows_more_top_of_head(views, man, d):
    def top_of_head(e):
        code = f"f{e}{d}"
        buf = views[code][2]
        up = _world_up(buf, camera_for(code, SIZE))
        return int(((buf.part == man.part_id("head")) & (up > 0.6)).sum())

    assert top_of_head(1) > 1.5 * top_of_head(0)
    assert top_of_head(0) > top_of_head(2)


def test_profile_faces_the_side_the_convention_says(views, man):
    """d=2: the camera stands at the figure's left, 90° counter-clockwise seen from above."""
    cam = camera_for("b02", SIZE)
    assert cam.position[0] > 3.0 and abs(cam.position[2]) < 1e-9  # +x is the figure's left
    assert camera_for("b04", SIZE).position[2] < -3.0  # straight behind
    images, points, buf = views["f02"]
    nose = buf.part == man.part_id("nose")
    head_cols = np.nonzero(buf.part == man.part_id("head"))[1]
    assert nose.any() and np.nonzero(nose)[1].mean() < head_cols.mean()  # nose points image-left
    # the near side is the figure's left: its ear and shoulder are visible, the right ones not
    i = {n: k for k, n in enumerate(COCO18)}
    assert points[i["ear_l"]] and not points[i["ear_r"]]
    assert points[i["shoulder_l"]] and not points[i["shoulder_r"]]
    # normal map convention (red = left, green = up, blue = towards the viewer)
    normal = images["normal"].astype(int)
    assert normal[..., 0][nose].mean() > 180  # the nose faces image-left
    front = views["f00"][0]["normal"].astype(int)
    fmask = views["f00"][0]["mask"] > 250
    cols = np.nonzero(fmask)[1]
    right_edge = fmask & (np.arange(SIZE)[None, :] > cols.max() - 6)
    assert front[..., 0][right_edge].mean() < 100  # the figure's left flank faces image-right
    head_top = (views["f10"][2].part == man.part_id("head")) & (views["f10"][2].normal[..., 1] > 0.5)
    assert views["f10"][0]["normal"][..., 1][head_top].mean() > 190  # facing up is green
    assert front[fmask][:, 2].min() >= 127  # nothing visible faces away from the camera


@pytest.mark.parametrize("code", ["f00", "f02", "f13", "b01", "b12", "b24"])
def test_depth_is_consistent_with_mask(views, code):
    images = views[code][0]
    depth, mask = images["depth"], images["mask"]
    assert np.array_equal(depth > 0, mask > 0)
    assert depth.max() == 255 and depth[mask == 0].max() == 0
    assert depth[mask == 255].min() >= 30  # the farthest body part stays clear of the background


def test_depth_is_near_bright(views, man):
    buf, depth = views["b00"][2], views["b00"][0]["depth"]
    # (aa=1 buffers and the anti-aliased map agree away from edges)
    nose, ear = buf.part == man.part_id("nose"), buf.part == man.part_id("ear_l")
    assert depth[nose].mean() > depth[ear].mean()


@pytest.mark.parametrize("code", CODES)
def test_visible_openpose_keypoints_lie_inside_silhouette(views, code):
    images, points, _ = views[code]
    mask = images["mask"]
    h, w = mask.shape
    visible = [p for p in points if p is not None]
    assert len(visible) >= (4 if code[0] == "f" else 9)
    for x, y in visible:
        assert mask[int(y * h), int(x * w)] > 127, (code, x, y)


def test_openpose_visibility_by_angle(views):
    i = {n: k for k, n in enumerate(COCO18)}
    front, back = views["b00"][1], views["b04"][1]
    assert all(front[k] for k in range(18))  # everything faces the camera
    assert back[i["nose"]] is None and back[i["eye_l"]] is None and back[i["ear_l"]] and back[i["ear_r"]]
    # from behind, the figure's right arm is on the image's right
    assert back[i["wrist_r"]][0] > 0.5 > back[i["wrist_l"]][0]
    assert front[i["wrist_r"]][0] < 0.5 < front[i["wrist_l"]][0]


def test_openpose_image_has_standard_colours(views):
    points = views["b00"][1]
    img = draw(points, 512, 1024)  # 512 px short side: drawn as is, no resize
    i = {n: k for k, n in enumerate(COCO18)}
    for name, colour in (("nose", (255, 0, 0)), ("shoulder_r", (255, 170, 0)), ("wrist_l", (0, 255, 85))):
        x, y = points[i[name]]
        assert tuple(img[int(y * 1024), int(x * 512)]) == colour, name
    assert draw(points, 256, 256).shape == (256, 256, 3)


@pytest.mark.parametrize("mirrored,source", [(5, 3), (6, 2), (7, 1)])
def test_azimuths_5_to_7_are_mirrors_of_3_to_1(man, mirrored, source):
    a = render_code(f"f1{mirrored}", SIZE)
    b = render_code(f"f1{source}", SIZE)
    for name in ("clay", "depth", "softedge", "canny", "mask"):
        assert np.array_equal(a[name], b[name][:, ::-1]), name
    flipped = b["normal"][:, ::-1].copy()
    flipped[..., 0] = 255 - flipped[..., 0]
    assert np.array_equal(a["normal"], flipped)  # left/right component flips with the image
    # OpenPose: the mirrored image is the pose of a mirrored figure (left/right swap roles) ...
    cam_src = camera_for(f"f1{source}", SIZE)
    pts_src = keypoints(man, cam_src, render(man, cam_src, aa=1))
    expect = mirror_keypoints(pts_src)
    assert np.array_equal(a["openpose"], draw(expect, SIZE, SIZE))
    # ... which, the figure being symmetric, is exactly what a camera at 5-7 sees
    cam = camera_for(f"f1{mirrored}", SIZE)
    direct = keypoints(man, cam, render(man, cam, aa=1))
    for p, q in zip(direct, expect):
        assert (p is None) == (q is None)
        if p is not None:
            assert abs(p[0] - q[0]) < 1e-6 and abs(p[1] - q[1]) < 1e-6


def test_mirror_keypoints_swaps_left_and_right():
    pts = [None] * 18
    pts[COCO18.index("wrist_r")] = (0.2, 0.5)
    out = mirror_keypoints(pts)
    assert out[COCO18.index("wrist_l")] == (0.8, 0.5) and out[COCO18.index("wrist_r")] is None


def test_primitives_hits_lie_on_surface_with_matching_normals(man):
    rng = np.random.default_rng(0)
    for prim in man.primitives:
        center, radius = prim.bound()
        o = center + np.array([0.3, 0.2, 3.0])
        dirs = center + rng.uniform(-radius, radius, (400, 3)) - o
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        t, flag = P.intersect(prim, tuple(dirs[:, i].astype(np.float32) for i in range(3)), o)
        hit = np.isfinite(t) & (flag < 0)
        assert hit.sum() > 20, prim
        pts = (o + t[hit, None] * dirs[hit]).astype(np.float32)
        dist, grad = P.distance(prim, pts)
        assert np.abs(dist).max() < 2e-4, prim  # sub-pixel even at 2048 px
        assert np.linalg.norm(pts - center, axis=1).max() <= radius + 1e-4
        assert ((P.normals(prim, pts, flag[hit]) * grad).sum(axis=1) > 0.99).all()
        assert ((P.normals(prim, pts, flag[hit]) * dirs[hit]).sum(axis=1) < 1e-3).all()  # front faces


def test_adaptive_antialiasing_equals_supersampling(man):
    cam = camera_for("f02", 96)
    buf = render(man, cam, aa=3)
    coverage = buf.resolve(lambda d, n, m: m.astype(np.float32))
    fine = render(man, cam.scaled(3), aa=1).mask.reshape(96, 3, 96, 3).mean(axis=(1, 3))
    assert np.abs(coverage - fine).max() < 1e-6
    assert 0 < len(buf.edge) < 0.2 * 96 * 96


def test_shading_is_continuous_where_bodies_meet(man):
    """Fillets: across waist, groin and shoulders the normal turns smoothly (no crease lines)."""
    cam = camera_for("b00", 512)
    smooth = render(man, cam, aa=1)
    hard = render(man, cam, aa=1, fillets=False)

    (x0, y0), (x1, y1) = cam.project(np.array([[0.02, 1.05, 0.1], [0.07, 0.76, 0.1]]))[0]
    region = np.zeros((511, cam.width), bool)
    region[int(y0):int(y1), int(x0):int(x1)] = True  # left of the navel, waist down to the groin

    def worst_step(buf):
        n, m = buf.normal, buf.mask
        z = np.where(m, buf.depth, 0)
        step = np.degrees(np.arccos(np.clip((n[1:] * n[:-1]).sum(-1), -1, 1)))
        same = m[1:] & m[:-1] & (np.abs(z[1:] - z[:-1]) < 0.005)
        return step[same & region].max()

    assert worst_step(hard) > 8
    assert worst_step(smooth) < 6
