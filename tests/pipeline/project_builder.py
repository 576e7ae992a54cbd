"""A real two-character project with a group, built once per test session by the REAL pipeline steps on the tiny
random models (generate → clean → pick → export → prepare → train → merge → compress → preview), for the rerun
tests to copy and edit. Settings are the smallest that still exercise every rule: 64 px generation (face 64×64,
body 64×128), export sizes 64 and 128 (face 128 is never upscaled, body 64 would be 32×64 and is skipped), three
codes per set in the datasets and one epoch of training, krnk with two candidates per code (so a hand pick can
differ from the automatic one)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = 'logic = "Lora1x1A1-AdamW8"\ndim = 2\nlr = 100\nsteps = 6\n'
#: the datasets keep three codes per set (the rest excluded), so six steps are one epoch: every image shapes the
#: LoRA, and an edited image always makes another LoRA (with one step, two datasets could train the same weights)
KEEP = ("f00", "f02", "f12", "b00", "b02", "b12")
EXCLUDE = [f"{k}{e}{a}" for k in "fb" for e in range(3) for a in range(5) if f"{k}{e}{a}" not in KEEP]
GENERATION = 'size = 64\nsteps = 1\nhires_scale = 1.0\nsampler = "Euler a"\n'
#: the ControlNet guides the whole (single) step: with the default end 0.3 one step would run without it
CONTROLNET = '[[generation.controlnet]]\nmap = "softedge"\nend = 1.0\n'
STEPS_ALL = ("generate", "clean", "pick", "export", "prepare", "train", "score", "merge", "compress", "preview")
FACE_STAGES = {"krnk": "krnk.toml", "tyank": "tyank.toml"}


def character_toml(kw: str, outfit: str, outfit_prompt: str, *, candidates: int = 1, model: str = "",
                   sizes: str = "[64, 128]", prompt: str = "") -> str:
    stages = "".join(f"[training.{s}]\n{RECIPE}" for s in ("face", "body", "group"))
    return (f'keyword = "{kw}"\nclass = "girl"\nprompt = "{prompt or "1girl, " + kw}"\nfill = "black"\n'
            f'[outfits]\n{outfit} = "{outfit_prompt}"\n'
            f'[generation]\n{GENERATION}candidates = {candidates}\nmodel = "{model}"\n{CONTROLNET}'
            f'[export]\nsizes = {sizes}\nexclude = {EXCLUDE!r}\n{stages}'.replace("'", '"'))


def templated_project(root: Path) -> Path:
    """A project with the bundled templates, no characters yet, and the smallest preview grid."""
    (root / "Characters").mkdir(parents=True)
    (root / "LoRAInput").mkdir()
    for folder in ("FaceTemplate", "BodyTemplate"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "charframe.toml").write_text('[preview]\nscenes = ["in a forest"]\nseeds = [1]\ntiny_size = 32\ntiny_steps = 1\n')
    return root


def make_project(root: Path) -> Path:
    templated_project(root)
    (root / "Characters" / "krnk.toml").write_text(character_toml("krnk", "sf", "sailor uniform", candidates=2))
    (root / "Characters" / "tyank.toml").write_text(character_toml("tyank", "kps", "kimono"))
    (root / "Characters" / "pair.group.toml").write_text(
        '[[member]]\ncharacter = "krnk"\noutfit = "sf"\n[[member]]\ncharacter = "tyank"\noutfit = "kps"\n')
    return root


def copy_project(src: Path, dest: Path) -> Path:
    """A copy with every mtime kept (symlinks too): what a user's `cp -a` or a moved folder looks like."""
    shutil.copytree(src, dest, symlinks=True)
    return dest
