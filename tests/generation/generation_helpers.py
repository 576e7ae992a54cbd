"""A tiny project for generation tests: a character file and small synthetic control maps (64 px)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from charframe.character import load_character

CHARACTER = """\
keyword = "krnk"
class = "girl"
prompt = "1girl, solo, short black hair, cat ears"
fill = "black"
asymmetric = {asymmetric}
[outfits]
sf = "sailor uniform"
[generation]
steps = {steps}
size = 64
hires_scale = {hires}
hires_denoise = 0.5
candidates = 2
seed = 7
sampler = "{sampler}"
cfg = 7
{extra}
[[generation.controlnet]]
map = "softedge"
weight = 0.8
start = 0.0
end = 0.6
"""

MAPS = ("softedge", "depth", "normal")


def make_project(root: Path, *, asymmetric: bool = False, steps: int = 2, hires: float = 1.0,
                 sampler: str = "Euler a", extra: str = "", maps=MAPS, codes=("f00", "f12", "f13", "b02")):
    """Write Characters/krnk.toml, LoRAInput/, and Face/BodyTemplate pictures + control maps; return the character."""
    (root / "LoRAInput").mkdir(parents=True, exist_ok=True)
    (root / "Characters").mkdir(exist_ok=True)
    path = root / "Characters" / "krnk.toml"
    path.write_text(CHARACTER.format(asymmetric=str(asymmetric).lower(), steps=steps, hires=hires, sampler=sampler,
                                     extra=extra), encoding="utf-8")
    for code in codes:
        set_dir = root / ("FaceTemplate" if code[0] == "f" else "BodyTemplate")
        w, h = (64, 64) if code[0] == "f" else (64, 128)
        rng = np.random.default_rng(int(code[1:]) + (0 if code[0] == "f" else 100))
        yy, xx = np.mgrid[0:h, 0:w]
        shape = (((xx - w * 0.4) ** 2 + (yy - h / 2) ** 2) < (w / 4) ** 2).astype(np.uint8) * 255
        set_dir.mkdir(exist_ok=True)
        Image.fromarray(255 - shape // 2).save(set_dir / f"{code}.png")
        for m in maps:
            (set_dir / "control" / m).mkdir(parents=True, exist_ok=True)
            px = np.stack([shape, rng.integers(0, 255, (h, w), dtype=np.uint8), shape // 2], axis=-1)
            Image.fromarray(px.astype(np.uint8)).save(set_dir / "control" / m / f"{code}.png")
    return load_character(path)
