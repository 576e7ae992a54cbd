"""Synthetic candidate pictures for the cleaning tests and benchmark: a figure with a known silhouette.

A silhouette (head + torso, or a template's mask) is drawn at 4× and area-downscaled, so its edge is
anti-aliased like a generated picture; the figure gets a hair colour on top, a body colour below, a
line drawn inside, and sits on a plain background of some colour.
"""

from __future__ import annotations

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
