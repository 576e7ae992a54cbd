"""Synthetic candidate pictures for the cleaning tests and benchmark: figures with a known silhouette.

A silhouette (head + torso, or a template's mask) is drawn at 4× and area-downscaled, so its edge is
anti-aliased like a generated picture; the figure gets a hair colour on top, a body colour below, a
line drawn inside, and sits on a plain background of some colour.

`draw_case` draws the varied figures of `FIGURE_CASES` (gaps closed by hair strands and arms, white and
near-white clothes on white, dark on black, highlights beside white hair) with their exact coverage, the
pixels of their highlights and of the background they enclose, for the flood rule's tests and benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from charframe.cleaning.images import write_png


def figure_mask(size: tuple[int, int], *, shift: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    """Coverage (H, W) float32 in [0, 1] of a bust figure (head + shoulders) of `size` = (H, W)."""
    h, w = size
    big = np.zeros((h * 4, w * 4), np.uint8)
    cx, cy = w * 4 * (0.5 + shift[0]), h * 4 * (0.5 + shift[1])
    s = min(h, w) * 4 * scale
    cv2.ellipse(big, (int(cx), int(cy - 0.18 * s)), (int(0.2 * s), int(0.24 * s)), 0, 0, 360, 255, -1)
    cv2.ellipse(big, (int(cx), int(cy + 0.45 * s)), (int(0.38 * s), int(0.4 * s)), 0, 0, 360, 255, -1)
    cv2.rectangle(big, (int(cx - 0.08 * s), int(cy)), (int(cx + 0.08 * s), int(cy + 0.1 * s)), 255, -1)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def compose_figure(coverage: np.ndarray, *, hair=(30, 25, 35), body=(220, 120, 110), background=(246, 244, 238),
                   noise: float = 1.5, seed: int = 0) -> np.ndarray:
    """An RGB uint8 picture: the figure of `coverage` (hair on its top fifth) over a plain background."""
    h, w = coverage.shape
    rows = np.flatnonzero((coverage > 0.5).any(axis=1))
    top, bottom = (rows[0], rows[-1]) if rows.size else (0, h)
    hair_end = top + (bottom - top) * 0.22
    yy = np.arange(h, dtype=np.float32)[:, None, None]
    colour = np.where(yy < hair_end, np.float32(hair), np.float32(body)) * np.ones((1, w, 1), np.float32)
    # a darker line inside the figure, as drawn pictures have
    cv2.line(colour, (w // 2, int(top + (bottom - top) * 0.5)), (w // 2, int(bottom)), (60, 40, 40), max(1, w // 128))
    a = coverage[..., None]
    img = colour * a + np.float32(background) * (1 - a)
    img += np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def write_template_mask(root: Path, code: str, coverage: np.ndarray) -> Path:
    """`<root>/FaceTemplate|BodyTemplate/control/mask/<code>.png` (255 figure) and a soft-edge map beside it."""
    folder = root / ("FaceTemplate" if code[0] == "f" else "BodyTemplate") / "control"
    mask = (coverage * 255 + 0.5).astype(np.uint8)
    write_png(folder / "mask" / f"{code}.png", mask)
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    write_png(folder / "softedge" / f"{code}.png", cv2.GaussianBlur(edge, (5, 5), 0))
    return folder / "mask" / f"{code}.png"


#: per code: (shift, scale) of the template figure, so codes differ
_POSES = {"f00": ((0.0, 0.0), 1.0), "f02": ((0.12, 0.0), 0.9), "f12": ((-0.1, 0.05), 0.85), "f03": ((0.0, -0.1), 0.8)}


def make_project(root: Path, codes: tuple[str, ...] = ("f00", "f02"), *, candidates: int = 3, size: int = 96,
                 fill: str = "auto", hair=(30, 25, 35), character_extra: str = "") -> Path:
    """A project with `Characters/krnk.toml`, template masks/soft-edge maps of `codes`, and candidates
    `LoRAWork/krnk/face/raw/<code>-<i>.png` of which candidate 1 matches the template's pose (the others are
    shifted or scaled). Returns the character file."""
    char = root / "Characters" / "krnk.toml"
    char.parent.mkdir(parents=True, exist_ok=True)
    char.write_text(f'keyword = "krnk"\nclass = "girl"\nfill = "{fill}"\n{character_extra}', encoding="utf-8")
    raw = root / "LoRAWork" / "krnk" / "face" / "raw"
    for n, code in enumerate(codes):
        shift, scale = _POSES.get(code, ((0.0, 0.0), 1.0))
        write_template_mask(root, code, figure_mask((size, size), shift=shift, scale=scale))
        for i in range(candidates):
            off = 0.0 if i == 1 else 0.09 * (i - 1)
            cover = figure_mask((size, size), shift=(shift[0] + off, shift[1]), scale=scale * (1 + 0.1 * abs(i - 1)))
            write_png(raw / f"{code}-{i}.png", compose_figure(cover, hair=hair, seed=10 * n + i))
    return char


# ---- varied figures with exact masks, for the flood rule's tests and benchmark ----------------------------------
#
# A half-body figure built from layers (back hair, long strands, neck, torso, arms, face, fringe, eyes, a bow,
# a collar) drawn at 4× and area-downscaled, then composited back to front over the background, so every
# edge is anti-aliased and the exact silhouette is the union of the layers' coverage. Coordinates are in units
# of the figure's scale, from the figure's centre (x right, y down).

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class FigureCase:
    """One synthetic picture: colours, which gap-closing parts and highlights it has, pose and render noise."""

    name: str
    background: Colour
    clothes: Colour
    hair: Colour = (40, 32, 45)
    skin: Colour = (250, 222, 205)
    #: Gaussian render noise, standard deviation per RGB channel (the issue's "±3", "±6")
    noise: float = 3.0
    strands: bool = False  # long hair strands down to the shoulders: a gap between strand, neck and shoulder
    arm_gap: bool = False  # a hand on the hip: a gap between arm and body
    outline: Colour | None = None  # a drawn line around the clothes
    eyes: Colour | None = (255, 255, 255)  # eye whites (with dark pupils)
    bow: Colour | None = None  # a bow on the hair
    collar: Colour | None = None  # a collar at the neck, wide enough to touch the strands
    shift: tuple[float, float] = (0.0, 0.1)  # of the figure's centre, in picture widths/heights
    scale: float = 0.85


@dataclass(frozen=True)
class Figure:
    rgb: np.ndarray  # (H, W, 3) uint8
    coverage: np.ndarray  # (H, W) float32, the exact alpha of the figure
    highlights: dict[str, np.ndarray]  # name → bool (H, W): pixels showing only that highlight layer
    gaps: np.ndarray  # bool (H, W): background enclosed by the figure (under an arm, inside a strand)


def _layers(case: FigureCase) -> list[tuple[str, Colour, list[tuple]]]:
    """(name, colour, shapes) back to front; a shape is ("ellipse", cx, cy, ax, ay), ("rect", x0, y0, x1, y1),
    ("line", thickness, points...) or ("outline", thickness, shape)."""
    torso = ("ellipse", 0, 0.5, 0.34, 0.4)
    arms = [("line", 0.09, (-0.27, 0.22), (-0.33, 0.62)),
            ("line", 0.09, (0.27, 0.2), (0.5, 0.45), (0.22, 0.66)) if case.arm_gap   # hand on the hip
            else ("line", 0.09, (0.27, 0.22), (0.33, 0.62))]
    layers: list[tuple[str, Colour | None, list[tuple]]] = [
        ("hair", case.hair, [("ellipse", 0, -0.2, 0.23, 0.23)]),
        ("strands", case.hair if case.strands else None,
         [("line", 0.06, (s * 0.18, -0.18), (s * 0.24, 0.0), (s * 0.25, 0.19)) for s in (-1, 1)]),
        ("neck", case.skin, [("rect", -0.06, -0.02, 0.06, 0.14)]),
        ("torso", case.clothes, [torso]),
        ("arms", case.clothes, arms),
        ("outline", case.outline, [("outline", 0.012, shape) for shape in (torso, *arms)]),
        ("face", case.skin, [("ellipse", 0, -0.15, 0.17, 0.18)]),
        ("fringe", case.hair, [("ellipse", 0, -0.29, 0.19, 0.1)]),
        ("collar", case.collar, [("ellipse", 0, 0.12, 0.22, 0.05)]),
        ("eyes", case.eyes, [("ellipse", s * 0.07, -0.12, 0.04, 0.025) for s in (-1, 1)]),
        ("pupils", (45, 40, 70) if case.eyes else None, [("ellipse", s * 0.07, -0.12, 0.014, 0.02) for s in (-1, 1)]),
        ("bow", case.bow, [("ellipse", 0.09 + d, -0.3, 0.04, 0.026) for d in (-0.04, 0.04)]),
    ]
    return [(name, colour, shapes) for name, colour, shapes in layers if colour is not None]


def _draw(big: np.ndarray, shape: tuple, centre: tuple[float, float], s: float) -> None:
    """Draw one shape (white) into the 4× canvas `big`."""
    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(centre[0] + x * s)), int(round(centre[1] + y * s))

    kind = shape[0]
    if kind == "ellipse":
        _, x, y, ax, ay = shape
        cv2.ellipse(big, pt(x, y), (int(ax * s), int(ay * s)), 0, 0, 360, 255, -1)
    elif kind == "rect":
        cv2.rectangle(big, pt(*shape[1:3]), pt(*shape[3:5]), 255, -1)
    elif kind == "line":
        pts = np.array([pt(*p) for p in shape[2:]], np.int32)
        cv2.polylines(big, [pts], False, 255, max(1, int(shape[1] * s)), cv2.LINE_8)
    else:  # "outline": the border of another shape, drawn with the given thickness
        inner = np.zeros_like(big)
        _draw(inner, shape[2], centre, s)
        k = max(1, int(shape[1] * s))
        big |= cv2.morphologyEx(inner, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def draw_case(case: FigureCase, size: tuple[int, int] = (512, 384), seed: int = 0) -> Figure:
    """The picture of `case` at `size` = (H, W), its exact coverage and the pixels of its highlights
    (eyes, bow, collar: where only that layer shows, fully)."""
    h, w = size
    centre = (w * 4 * (0.5 + case.shift[0]), h * 4 * (0.5 + case.shift[1]))
    s = min(h, w) * 4 * case.scale
    img = np.empty((h, w, 3), np.float32)
    img[:] = case.background
    seen = np.zeros((h, w), np.float32)  # 1 - coverage so far
    seen[:] = 1
    visible: dict[str, np.ndarray] = {}
    for name, colour, shapes in _layers(case):
        big = np.zeros((h * 4, w * 4), np.uint8)
        for shape in shapes:
            _draw(big, shape, centre, s)
        a = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        img += (np.float32(colour) - img) * a[..., None]
        seen *= 1 - a
        for v in visible.values():
            v *= 1 - a
        visible[name] = a.copy()
    img += np.random.default_rng(seed).normal(0, case.noise, img.shape).astype(np.float32)
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    highlights = {n: visible[n] > 0.999 for n in ("eyes", "bow", "collar") if n in visible}
    _, labels = cv2.connectedComponents((seen >= 0.5).view(np.uint8), connectivity=4)
    outside = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return Figure(rgb, 1 - seen, highlights, (seen >= 0.5) & ~np.isin(labels, outside))


WHITE_BG: Colour = (250, 250, 250)
OFF_WHITE_BG: Colour = (246, 244, 238)
BLACK_BG: Colour = (10, 10, 12)
LIGHT_HAIR: Colour = (236, 232, 244)  # silver/white hair, the reason a character's prompt asks for white

#: the cases of issue #26 and more: gaps closed by strands and arms, white / near-white / pastel clothes on white,
#: dark clothes on black, a figure running off two borders, white highlights next to white hair and clothes
FIGURE_CASES: tuple[FigureCase, ...] = (
    FigureCase("strand gap, eyes of the background colour", OFF_WHITE_BG, (205, 70, 80), strands=True, eyes=OFF_WHITE_BG),
    FigureCase("arm gap", WHITE_BG, (70, 90, 160), arm_gap=True),
    FigureCase("strands + arm, light hair", WHITE_BG, (60, 60, 80), hair=LIGHT_HAIR, strands=True, arm_gap=True),
    FigureCase("white clothes on white", (243, 243, 245), (255, 255, 255), arm_gap=True),
    FigureCase("near-white clothes, light hair", WHITE_BG, (230, 230, 235), hair=LIGHT_HAIR, strands=True),
    FigureCase("near-white clothes, outlined", WHITE_BG, (230, 230, 235), outline=(90, 80, 90), arm_gap=True),
    FigureCase("pastel pink on white", (252, 252, 252), (250, 222, 230), strands=True, arm_gap=True),
    FigureCase("pastel blue on off-white", OFF_WHITE_BG, (214, 228, 248), hair=(250, 236, 190)),
    FigureCase("dark clothes on black", BLACK_BG, (38, 36, 46), hair=(60, 45, 40), strands=True, arm_gap=True),
    FigureCase("black clothes, light hair on black", BLACK_BG, (26, 26, 30), hair=LIGHT_HAIR, strands=True),
    FigureCase("two borders", WHITE_BG, (120, 170, 220), strands=True, arm_gap=True, shift=(-0.3, 0.05), scale=0.8),
    FigureCase("white collar + bow, white hair", (246, 246, 248), (60, 70, 110), hair=LIGHT_HAIR, strands=True,
               collar=(255, 255, 255), bow=(255, 255, 255)),
)

#: render noise levels every case is checked at
FIGURE_NOISE = (3.0, 6.0)
