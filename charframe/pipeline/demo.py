"""The main job end to end on embedded defaults: `charframe demo`.

bundled templates → example dataset (clay renders, background filled black, exported at several
sizes like a real multi-size folder set) → captions + dataset TOML → built-in trainer (the tiny demo
model unless a real one is given) → FACE block-weight merge → SvR16 compression.
With a real `--model` the same run trains a real (if tiny-data) face LoRA of the mannequin.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from charframe.errors import CharframeError
from charframe.dataset.naming import parse_code
from charframe.project import find_project_root, project_dirs
from charframe.templates.writer import encode_png
from charframe.lora.blocks import resolve_weights
from charframe.lora.ops.compress import compress_file
from charframe.lora.functional import RankRule
from charframe.lora.ops.merge import merge_file
from charframe.dataset.prepare import prepare_dirs
from charframe.training.plan import make_plan
from charframe.training.engines.builtin import train

log = logging.getLogger(__name__)

#: The example dataset: `4_demo/demo girl_f0128` … like CONVENTIONS §4's `4_krnk` example.
EXAMPLE_NAME = "4_demo"
EXAMPLE_KEYWORDS = "demo girl"
EXAMPLE_SIZES = (128, 256, 768)
#: Where the committed example dataset lives in a checkout.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class DemoResult:
    dataset: Path
    toml: Path
    lora: Path
    merged: Path
    compressed: Path


def example_image(template: Path, mask: Path, size: int):
    """One training image from a template: the clay render on black, resized to `size`."""
    from PIL import Image

    with Image.open(template) as t, Image.open(mask) as m:
        black = Image.new("L", t.size, 0)
        img = Image.composite(t.convert("L"), black, m.convert("L")).convert("RGB")
    return img.resize((size, size), Image.Resampling.LANCZOS)


def write_example_dataset(dest: str | os.PathLike, face_templates: str | os.PathLike,
                          sizes: tuple[int, ...] = EXAMPLE_SIZES) -> Path:
    """Write `<dest>/demo girl_f<size>/fXY.png` for every coded face template and size."""

    import numpy as np

    dest, face = Path(dest), Path(face_templates)
    templates = sorted(p for p in face.glob("*.png") if parse_code(p.name))
    if not templates:
        raise CharframeError(f"{face}: no face templates (f??.png); run `charframe templates` first")
    for size in sizes:
        folder = dest / f"{EXAMPLE_KEYWORDS}_f{size:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for t in templates:
            img = example_image(t, face / "control" / "mask" / t.name, size)
            (folder / t.name).write_bytes(encode_png(np.asarray(img)))
    return dest


def ensure_example_dataset(input_dir: Path, face_templates: Path) -> Path:
    """`LoRAInput/4_demo`: copied from the checkout's `examples/`, else rendered from the templates.

    An existing folder is used as it is (it may hold the user's own edits)."""
    target = input_dir / EXAMPLE_NAME
    if target.exists():
        log.info("using the existing example dataset %s", target)
        return target
    shipped = EXAMPLES_DIR / EXAMPLE_NAME
    if shipped.is_dir():
        shutil.copytree(shipped, target, ignore=shutil.ignore_patterns("*.txt", "*.toml"))
        log.info("example dataset copied to %s", target)
    else:
        write_example_dataset(target, face_templates)
        log.info("example dataset rendered from %s into %s", face_templates, target)
    return target


def run_demo(
    project: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    vae: str | None = None,
    logic: str = "Lora3x3A50p-AdamW8",
    dim: int = 8,
    lr: int = 100,
    steps: int = 20,
    out: str = "demo",
) -> DemoResult:
    """Run the whole flow once in the project at `project` (default: found from the cwd)."""

    root = find_project_root(project)
    dirs = project_dirs(root)
    dirs.input.mkdir(parents=True, exist_ok=True)
    dataset = ensure_example_dataset(dirs.input, dirs.face_templates)

    log.info("[1/4] captions and dataset TOML")
    prepared = prepare_dirs([dataset])
    toml = prepared.tomls[0]

    log.info("[2/4] training %s on %s", logic, "the tiny demo model" if model is None else model)
    plan = make_plan(
        logic, dim, lr, steps, dataset=toml, out=out, model=model, vae=vae,
        output_dir=str(dirs.output), logging_dir=str(dirs.log),
    )
    lora = train(plan).output

    log.info("[3/4] FACE block-weight merge")
    label, weights = resolve_weights("FACE", root)
    merged = merge_file(lora, weights, label).output

    log.info("[4/4] SVD compression (sv_ratio 16)")
    compressed = compress_file(merged, RankRule("sv_ratio", 16.0)).output
    return DemoResult(dataset, toml, lora, merged, compressed)
