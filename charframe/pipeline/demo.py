"""The main job end to end on embedded defaults: `charframe demo` = `charframe run` on a demo character.

It writes `Characters/demo.toml` (the tiny demo model and tiny random ControlNet unless a real model is given)
and runs the pipeline's face stage on it with the pipeline's own step table: ControlNet generation from the
bundled face templates → background removal → pick by pose fidelity → multi-size export → captions + dataset
TOML → built-in trainer → FACE block-weight merge → SvR16 compression → preview grid. With the tiny model the
generation settings are small (128 px, 4 steps, 2 candidates, no hires pass, export at 64 and 128 px) so the
whole run stays a few minutes on two CPU cores; with a real `--model` the character file's defaults
(CONVENTIONS §9, or the model family's: SDXL's 1024 px, sampler and recipes) apply. `family` picks the tiny demo
model's family (`sdxl`: the tiny SDXL model, its tiny SDXL ControlNet, SDXL's conditioning and LoRA layout).
Rerunning the demo redoes only what changed. `examples/4_demo/` (clay renders of the
templates) stays as a ready-made dataset for `charframe prepare`/`train` experiments.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from charframe.character import CHARACTERS_DIR
from charframe.dataset.naming import parse_code
from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.pipeline.filesets import FileSet
from charframe.pipeline.runner import Options, RunReport, run_target
from charframe.pipeline.stages import StageJob, target_jobs
from charframe.pipeline.steps import IMAGES, STEPS, RunContext, Step
from charframe.project import find_project_root, project_dirs
from charframe.templates.writer import encode_png
from charframe.util import toml as tomlio
from charframe.util.files import atomic_write_text, backup_file

log = logging.getLogger(__name__)

#: The example dataset: `4_demo/demo girl_f0128` … like CONVENTIONS §4's `4_krnk` example.
EXAMPLE_NAME = "4_demo"
EXAMPLE_KEYWORDS = "demo girl"
EXAMPLE_SIZES = (128, 256, 768)
#: Where the committed example dataset lives in a checkout.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


DEMO_KEYWORD = "demo"


@dataclass
class DemoResult:
    dataset: Path
    toml: Path
    lora: Path
    merged: Path
    compressed: Path
    preview: Path
    report: RunReport


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


#: The demo's step table: the pipeline's own (generate → clean → pick → export → prepare → … → preview).
DEMO_STEPS: tuple[Step, ...] = STEPS
#: Generation and export settings for the tiny random model (small and quick; the pictures are noise anyway).
TINY_GENERATION = {"size": 128, "steps": 4, "candidates": 2, "hires_scale": 1.0, "sampler": "Euler a", "cfg": 7.0}
#: face 128×128 → 64 and 128 px; body 128×256 → 128 px (64 px would be 32×64, under the 64 px bucket: skipped)
TINY_EXPORT = {"sizes": [64, 128]}
#: the demo's outfit, so `charframe run demo --stage body` goes on to the body stage
DEMO_OUTFIT = {"sf": "school uniform, pleated skirt"}
#: The templates a checkout ships (copied into a demo project that has none).
BUNDLED_TEMPLATES = Path(__file__).resolve().parents[2]


#: the demo's training logic where the model family's data names none (SD1.x: the original batch file's)
DEMO_LOGIC = "Lora3x3A50p-AdamW8"


def demo_logic(family: str | None) -> str:
    """The family's face recipe logic (SDXL: Lora1x1A50p, attention and linear layers), else `DEMO_LOGIC`."""
    face = get_family(family).data.get("defaults", {}).get("training", {}).get("face", {})
    return str(face.get("logic", DEMO_LOGIC))


def demo_character(model: str | None, vae: str | None, logic: str | None, dim: int, lr: int, steps: int,
                   family: str | None = None) -> str:
    """The demo character file: the mannequin, trained with the given recipe (`family`: the model family it names,
    for the tiny demo model; None = SD1.x, or the model file's; `logic` None = the family's)."""
    logic = logic or demo_logic(family)
    generation = {"model": str(Path(model).absolute()) if model else "", "vae": str(Path(vae).absolute()) if vae else ""}
    if family:
        generation["family"] = get_family(family).id
    data = {
        "keyword": DEMO_KEYWORD, "class": "girl", "prompt": "1girl, solo, grey clay mannequin", "fill": "black",
        "outfits": DEMO_OUTFIT,
        "generation": generation if model else generation | TINY_GENERATION,
        **({} if model else {"export": TINY_EXPORT}),
        "training": {stage: {"logic": logic, "dim": dim, "lr": lr, "steps": steps, "preset": preset, "sv_ratio": 16.0}
                     for stage, preset in (("face", "FACE"), ("body", "BODY"))},
    }
    return "# written by `charframe demo` (rewritten with its options; an edited copy is kept as .bak)\n" + tomlio.dumps(data)


def ensure_templates(root: Path) -> None:
    """A demo project without templates gets a copy of the checkout's (`FaceTemplate/` and `BodyTemplate/`, with
    their control maps), so the face stage runs at once and the body stage can follow."""
    dirs = project_dirs(root)
    for target in (dirs.face_templates, dirs.body_templates):
        bundled = BUNDLED_TEMPLATES / target.name
        if not target.is_dir() and bundled.is_dir() and bundled.resolve() != target.resolve():
            shutil.copytree(bundled, target)
            log.info("templates copied to %s", target)


def write_demo_character(root: Path, text: str) -> Path:
    path = root / CHARACTERS_DIR / f"{DEMO_KEYWORD}.toml"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        log.info("%s differs from the demo's options; the old one is kept as %s", path, backup_file(path).name)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def run_demo(
    project: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    vae: str | None = None,
    logic: str | None = None,
    dim: int = 8,
    lr: int = 100,
    steps: int = 20,
    progress: bool = True,
    family: str | None = None,
) -> DemoResult:
    """`charframe run` of the demo character's face stage in the project at `project` (default: from the cwd)."""
    if project is not None and Path(project).exists() and not Path(project).is_dir():
        raise CharframeError(f"{project}: a file; name a project folder (or a new one) for {{param}}", param="project")
    if project is not None and not Path(project).exists():
        try:
            Path(project).mkdir(parents=True)  # `charframe demo --project ~/demo-project` starts a new project there
        except OSError as e:
            raise CharframeError(f"{project}: cannot make the project folder ({e.strerror or e}); name another "
                                 "folder for {param}", param="project") from None
        log.info("%s: new project folder", project)
    root = find_project_root(project)
    if project is not None and root != Path(project).absolute():
        root = Path(project).absolute()  # the folder the user named, even without LoRAInput/ yet
    project_dirs(root).input.mkdir(parents=True, exist_ok=True)
    ensure_templates(root)
    character = write_demo_character(root, demo_character(model, vae, logic, dim, lr, steps, family))
    _, report = run_target(character, Options(stage="face", progress=progress), DEMO_STEPS)
    if report.failed:
        first = report.failed[0]
        raise CharframeError(f"demo: step {first.step} failed: {first.message}")
    job = target_jobs(character, "face")[0]
    return DemoResult(job.dataset, Path(job.plan.io.dataset), job.lora, job.merged, job.compressed, job.preview, report)
