"""The main job end to end on embedded defaults: `charframe demo` = `charframe run` on a demo character.

It writes `Characters/demo.toml` (the tiny demo model unless a real one is given) and runs the pipeline's face
stage on it: example dataset (clay renders of the bundled templates, background filled black, exported at
several sizes like a real multi-size folder set) → captions + dataset TOML → built-in trainer → FACE
block-weight merge → SvR16 compression → preview grid. The first step is the only demo-specific row of the
step table (`DEMO_STEPS`); when this checkout has the generation steps, the demo table is the pipeline's own
(`STEPS`: generate → clean → pick → export in place of `example`). With a real `--model` the same run trains a
real (if tiny-data) face LoRA of the mannequin. Rerunning the demo redoes only what changed.
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
from charframe.pipeline.manifest import FileSet
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


def _example(fn, job: StageJob, ctx: RunContext) -> None:
    fn(job.dataset.parent, project_dirs(job.root).face_templates)


#: The example dataset in place of generate → clean → pick → export (see the module docstring).
EXAMPLE_STEP = Step(
    "example", "charframe.pipeline.demo:ensure_example_dataset", frozenset({"face"}),
    lambda j: [FileSet(EXAMPLES_DIR / EXAMPLE_NAME, IMAGES)], lambda j: [FileSet(j.dataset, IMAGES)],
    lambda j: {}, _example, "the example dataset (examples/4_demo)",
)
DEMO_STEPS: tuple[Step, ...] = (EXAMPLE_STEP,) + tuple(s for s in STEPS if s.name not in ("generate", "clean", "pick", "export"))


def demo_character(model: str | None, vae: str | None, logic: str, dim: int, lr: int, steps: int) -> str:
    """The demo character file: the mannequin, trained with the given recipe."""
    data = {
        "keyword": DEMO_KEYWORD, "class": "girl", "prompt": "1girl, solo, grey clay mannequin", "fill": "black",
        "generation": {"model": str(Path(model).absolute()) if model else "", "vae": str(Path(vae).absolute()) if vae else ""},
        "training": {"face": {"logic": logic, "dim": dim, "lr": lr, "steps": steps, "preset": "FACE", "sv_ratio": 16.0}},
    }
    return "# written by `charframe demo` (rewritten with its options; an edited copy is kept as .bak)\n" + tomlio.dumps(data)


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
    logic: str = "Lora3x3A50p-AdamW8",
    dim: int = 8,
    lr: int = 100,
    steps: int = 20,
    progress: bool = True,
) -> DemoResult:
    """`charframe run` of the demo character's face stage in the project at `project` (default: from the cwd)."""
    if project is not None and not Path(project).is_dir():
        what = "a file" if Path(project).exists() else "no such folder"
        raise CharframeError(f"{project}: {what}; name an existing project folder for {{param}}", param="project")
    root = find_project_root(project)
    if project is not None and root != Path(project).absolute():
        root = Path(project).absolute()  # the folder the user named, even without LoRAInput/ yet
    project_dirs(root).input.mkdir(parents=True, exist_ok=True)
    character = write_demo_character(root, demo_character(model, vae, logic, dim, lr, steps))
    _, report = run_target(character, Options(stage="face", progress=progress), DEMO_STEPS)
    if report.failed:
        first = report.failed[0]
        raise CharframeError(f"demo: step {first.step} failed: {first.message}")
    job = target_jobs(character, "face")[0]
    return DemoResult(job.dataset, Path(job.plan.io.dataset), job.lora, job.merged, job.compressed, job.preview, report)
