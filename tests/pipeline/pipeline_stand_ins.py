"""Small real implementations of the generation-side step contracts (issue 9), for pipeline tests on a checkout
that does not have `generate` / `clean` / `pick` / `export` yet. They write real PNG files where the real steps
do, with the same signatures, so the pipeline's staleness, ordering and datasets are tested for real:

- generate: the example renders (examples/4_demo, 128 px) tinted per character, as `raw/<code>-0.png`;
  a body set checks that the face LoRA it is given exists and writes its name to `raw/.face_lora`;
- clean: `clean/<code>.png` (RGB) and `alpha/<code>.png` (RGBA, alpha = not black);
- pick: `picks.toml` = candidate 0 of every code;
- export: `LoRAInput/<dataset>/<kw><outfit> <class>_<f|b><size>/<code>.png` for each size ≤ the source.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import numpy as np
from PIL import Image

from charframe.character import Character
from charframe.project import project_dirs
from charframe.util import toml as tomlio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "4_demo" / "demo girl_f0128"
CODES = ("00", "01", "02")
CALLS = {
    "generate": "pipeline_stand_ins:generate_set",
    "clean": "pipeline_stand_ins:clean_set",
    "pick": "pipeline_stand_ins:pick_set",
    "export": "pipeline_stand_ins:export_set",
}


def _tint(keyword: str) -> np.ndarray:
    h = hashlib.blake2b(keyword.encode(), digest_size=3).digest()
    return np.array([0.5 + b / 510 for b in h])


def generate_set(character: Character, kind: str, *, outfit: str = "", codes=None, candidates=None, face_lora=None,
                 control=None, progress: bool = True) -> list[Path]:
    raw = character.work_dir(character.set_name(kind, outfit)) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if kind == "b":
        if face_lora is None or not Path(face_lora).is_file():
            raise AssertionError(f"body set generated without its face LoRA ({face_lora})")
        (raw / ".face_lora").write_text(Path(face_lora).name)
    out = []
    for code in CODES:
        img = np.asarray(Image.open(EXAMPLE / f"f{code}.png").convert("RGB"), dtype=np.float64)
        img = (img * _tint(character.keyword + outfit)).clip(0, 255).astype(np.uint8)
        path = raw / f"{kind}{code}-0.png"
        Image.fromarray(img).save(path)
        out.append(path)
    return out


def clean_set(character: Character, set_name: str, *, method: str = "auto", model=None, progress: bool = True) -> None:
    work = character.work_dir(set_name)
    (work / "clean").mkdir(exist_ok=True)
    (work / "alpha").mkdir(exist_ok=True)
    for raw in sorted((work / "raw").glob("*.png")):
        rgb = np.asarray(Image.open(raw).convert("RGB"))
        alpha = (rgb.max(axis=2) > 8).astype(np.uint8) * 255
        Image.fromarray(rgb).save(work / "clean" / raw.name)
        Image.fromarray(np.dstack([rgb, alpha])).save(work / "alpha" / raw.name)


def pick_set(character: Character, set_name: str, *, manual=None) -> dict[str, int]:
    if os.environ.get("PIPELINE_TEST_KILL_IN") == "pick":  # the killed-run test: die as a power cut would
        os.kill(os.getpid(), signal.SIGKILL)
    work = character.work_dir(set_name)
    picks = {p.stem.split("-")[0]: 0 for p in sorted((work / "clean").glob("*-0.png"))}
    tomlio.write(work / "picks.toml", {"picks": picks})
    return picks


def export_set(character: Character, set_name: str, *, sizes=None, alpha_mask=None, dataset=None) -> list[Path]:
    work = character.work_dir(set_name)
    kind, outfit = ("f", "") if set_name == "face" else ("b", set_name.split("-", 1)[1])
    dataset = dataset or (character.face_dataset() if kind == "f" else character.body_dataset(outfit))
    picks = tomlio.load(work / "picks.toml")["picks"]
    written = []
    for code, i in picks.items():
        img = Image.open(work / "clean" / f"{code}-{i}.png")
        for size in sizes or character.export.sizes:
            if size > img.width:
                continue
            folder = project_dirs(character.root).input / dataset / character.subset(kind, size, outfit)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{code}.png"
            img.resize((size, size), Image.Resampling.BOX).save(path)
            written.append(path)
    return written
