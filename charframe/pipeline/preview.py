"""Preview grids: the base model, the LoRA, the merged and the compressed LoRA side by side on fixed prompts.

Rows are the models (and the previous version of the LoRA when there is one), columns the scenes × seeds of
`preview_spec` (the character in five different places, as DreamBooth's evaluation does, so overfitting
shows); every image of a column shares its prompt and seed, so differences come from the model alone. To the
right, set apart, a LoRA-strength sweep of the first scene and seed (`[preview] strengths`, default 0.6, 0.8,
1.0: WebUI's XYZ plot over `<lora:…:w>`). A title block says which files, base model, prompt, seeds and
sampling settings made the grid, so a PNG found later explains itself. One PNG beside the LoRA
(`LoRAOutput/<out>/<out>-<stage>-preview.png`) and the same rows as TensorBoard images
(`LoRALog/<out>-preview/`, tag `<stage>/<model>`, step = training steps). The LoRA row is the checkpoint the score
step chose (`score_file.chosen_lora`: the final LoRA unless an earlier step scored better or was pinned).
Prompts are encoded as generated images are (`generation.prompt.encode_pair`: WebUI's weights and 75-token chunks,
the training's clip skip), with the embeddings of the project's `embeddings/` folder the prompts call, and in each
LoRA's row the embeddings that LoRA bundles (a pivotal LoRA's trigger: the base row reads the keyword as text).
Each LoRA is merged into the loaded model's weights for its row (at each strength of the sweep) and the exact
weights are put back after it (`generation.face_lora.lora_applied`, the same code that applies the face LoRA
when generating the body set): every kind charframe writes (LoRA, LoCon, LoHa, LoKr) is drawn, with no extra
dependency (diffusers' own LoRA loader needs peft and reads no LoHa). A file that does not fit the model gets
grey tiles that say so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from charframe.errors import CharframeError
from charframe.generation.embeddings import PromptEmbeddings, prompt_embeddings
from charframe.generation.families import conditioning
from charframe.pipeline.preview_spec import PreviewSettings, preview_settings, prompts
from charframe.pipeline.render import Drawer, load_drawer
from charframe.pipeline.score_file import chosen_lora
from charframe.pipeline.stages import StageJob
from charframe.project import project_dirs
from charframe.templates.writer import encode_png
from charframe.util.files import atomic_write_bytes
from charframe.util.fonts import Pen, font, wrap

log = logging.getLogger(__name__)

MIN_TILE, MARGIN, GAP, SWEEP_GAP, LABEL_W = 128, 16, 8, 28, 112
PAPER, INK, FAINT, GREY = (255, 255, 255), (30, 30, 30), (105, 105, 105), (96, 96, 96)
TITLE_SIZE, TEXT_SIZE, HEAD_SIZE = 20, 13, 12


@dataclass
class Row:
    """One model of the grid: its label, the LoRA file (None = the base model), the scene × seed images and the
    strength sweep's images (empty for the base model)."""

    label: str
    lora: Path | None
    images: list[Image.Image]
    sweep: list[Image.Image] = field(default_factory=list)


@dataclass
class GridLayout:
    image: Image.Image
    title_box: tuple[int, int, int, int]
    tiles: dict[tuple[int, int], tuple[int, int, int, int]]        # (row, column) → box; sweep columns follow
    texts: list[str]


def _grey(text: str, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), GREY)
    pen = Pen(img, [])
    for k, line in enumerate(text.split("\n")):
        pen.text((6, 6 + 17 * k), line, 13, (255, 255, 255), width=size - 12)
    return img


def preview_grid(title: Sequence[str], rows: Sequence[Row], columns: Sequence[str], sweep: Sequence[str],
                 size: int) -> GridLayout:
    """Title block, then rows of equal tiles with gaps: model names on the left, the scene/seed of each column on
    top, the strength sweep's columns apart on the right."""
    size = max(size, MIN_TILE)  # tiny-model previews are shown enlarged so the labels fit
    n, m = len(columns), len(sweep)
    grid_w = LABEL_W + n * (size + GAP) + (SWEEP_GAP + m * (size + GAP) if m else 0)
    width = max(MARGIN * 2 + grid_w, 640)
    lines = [(line, TITLE_SIZE if i == 0 else TEXT_SIZE) for i, text in enumerate(title)
             for line in wrap(text, TITLE_SIZE if i == 0 else TEXT_SIZE, width - 2 * MARGIN)]
    title_h = sum(sz + 6 for _, sz in lines)
    head_y = MARGIN + title_h + 10
    top = head_y + 2 * (HEAD_SIZE + 3) + 6
    height = top + len(rows) * (size + GAP) + MARGIN
    grid = Image.new("RGB", (width, height), PAPER)
    texts: list[str] = []
    pen = Pen(grid, texts)
    y = MARGIN
    for line, sz in lines:
        pen.text((MARGIN, y), line, sz, INK if sz == TITLE_SIZE else FAINT)
        y += sz + 6
    title_w = max((round(font(sz).getlength(line)) for line, sz in lines), default=0)
    layout = GridLayout(grid, (MARGIN, MARGIN, MARGIN + title_w, y), {}, texts)
    xs = [MARGIN + LABEL_W + j * (size + GAP) for j in range(n)]
    xs += [MARGIN + LABEL_W + n * (size + GAP) + SWEEP_GAP + j * (size + GAP) for j in range(m)]
    for x, name in zip(xs, [*columns, *sweep]):
        for k, part in enumerate(name.split("\n")[:2]):
            pen.text((x, head_y + k * (HEAD_SIZE + 3)), part, HEAD_SIZE, INK if k == 0 else FAINT, width=size)
    if m:
        x = xs[n] - SWEEP_GAP // 2
        pen.draw.line((x, head_y, x, height - MARGIN), fill=(200, 200, 200), width=1)
    for i, row in enumerate(rows):
        y = top + i * (size + GAP)
        pen.text((MARGIN, y + size // 2), row.label, TEXT_SIZE, INK, width=LABEL_W - 8, anchor="lm")
        if m and not row.sweep:
            pen.text((xs[n], y + size // 2), "no LoRA, no sweep", TEXT_SIZE, FAINT, width=size, anchor="lm")
        for j, img in enumerate([*row.images, *([None] * (n - len(row.images))), *row.sweep][:n + m]):
            if img is None:
                continue
            layout.tiles[(i, j)] = (xs[j], y, xs[j] + size, y + size)
            grid.paste(img.resize((size, size), Image.Resampling.NEAREST if img.width < size else Image.Resampling.LANCZOS),
                       (xs[j], y))
    return layout


def _model_name(path: str | None) -> str:
    return Path(path).name if path else "charframe's tiny random demo model (noise pictures)"


def preview_title(job: StageJob, rows: Sequence[Row], s: PreviewSettings, texts: Sequence[str]) -> list[str]:
    """The title block: what made the grid (files, base model, prompt, seeds, settings, strengths)."""
    def name(p: Path) -> str:  # merged/compressed names extend the LoRA's: show only what they add
        return f"…{p.name[len(job.lora.stem):]}" if p.name.startswith(job.lora.stem + "-") else p.name

    files = ", ".join(f"{r.label} = {name(r.lora)}" for r in rows if r.lora is not None)
    vae = f", VAE {Path(job.plan.io.vae).name}" if job.plan.io.vae else ""
    sweep = (f"; strength sweep {', '.join(f'{w:g}' for w in s.strengths)} on “{s.scenes[0]}”, seed {s.seeds[0]}"
             if s.strengths and s.scenes and s.seeds else "")
    prompt = texts[0].rsplit(", ", 1)[0] if texts else ""
    steps = f"{s.steps} step{'s' if s.steps != 1 else ''}"
    # SDXL's encoders always give their penultimate layer: no clip skip to state (sd-scripts leaves it out too)
    skip = f"; clip skip {job.plan.recipe.clip_skip}" if conditioning(job.family) == "clip" else ""
    return [f"{job.out} {job.name} preview",
            f"rows: base = no LoRA, {files} (in {job.lora.parent.name}/; LoRA strength 1{sweep})",
            f"base model: {_model_name(job.plan.io.model)}{vae}{skip}",
            f"prompt: {prompt}, <scene>; negative: {job.character.negative or '(none)'}",
            f"seeds {', '.join(map(str, s.seeds))}; {steps}, CFG {s.cfg:g}, {s.size} px"]


def _tensorboard(log_dir: Path, stage: str, rows: Sequence[tuple[str, Sequence[Image.Image]]], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as w:
        for label, images in rows:
            strip = np.concatenate([np.asarray(img) for img in images], axis=1)
            w.add_image(f"{stage}/{label}", strip, global_step=step, dataformats="HWC")


def _render(drawer: Drawer, row: Row, texts: Sequence[str], negative: str, s: PreviewSettings, bar: Any,
            folder: PromptEmbeddings) -> None:
    """Fill `row` with its scene × seed images and, for a LoRA, its strength sweep (first scene and seed; at
    strength 1 the grid's own image is reused)."""
    with drawer.lora(row.lora):
        row.images = drawer.draw(texts, negative, s, bar, folder.with_bundle(row.lora))
    if row.lora is None or not row.images:
        return
    for w in s.strengths:
        if w == 1.0:
            row.sweep.append(row.images[0])
            bar.update(1)
            continue
        with drawer.lora(row.lora, w):
            row.sweep += drawer.draw(texts[:1], negative, replace(s, seeds=s.seeds[:1]), bar,
                                     folder.with_bundle(row.lora))


def preview_job(job: StageJob, *, progress: bool = True, previous: Path | None = None) -> Path:
    """Draw the grid of one stage (base, LoRA, merged, compressed, and `previous`, the LoRA this run replaced,
    when given) with its strength sweep, and log the rows to TensorBoard."""
    s = preview_settings(job.root, job.plan.io.model is None, job.family)
    texts = prompts(job.members, s)
    folder = prompt_embeddings(job.root, [*texts, job.character.negative])  # read and checked before the model
    drawer = load_drawer(job)
    folder.lookup(drawer.pipe.tokenizer, drawer.pipe.text_encoder)  # a folder embedding of another width: one line
    rows = [Row("base", None, []), Row("LoRA", chosen_lora(job), []), Row("merged", job.merged, []),
            Row("compressed", job.compressed, [])] + ([Row("previous", Path(previous), [])] if previous else [])
    per_row = len(texts) * len(s.seeds)
    total = len(rows) * per_row + (len(rows) - 1) * len(s.strengths)
    with tqdm(total=total, desc=f"preview {job.out}", unit="img", disable=not progress, leave=False) as bar:
        for row in rows:
            try:
                _render(drawer, row, texts, job.character.negative, s, bar, folder)
            except CharframeError as e:
                log.warning("%s; its preview row is left grey", e)
                grey = _grey(f"{row.label}:\nnot drawn\n(see the\nwarning)", max(s.size, MIN_TILE))
                row.images = [grey] * per_row
                row.sweep = [grey] * len(s.strengths) if row.lora is not None else []
                bar.update(per_row)
    columns = [f"{scene}\nseed {seed}" for scene in s.scenes for seed in s.seeds]
    sweep = [f"strength {w:g}\n{s.scenes[0]}, seed {s.seeds[0]}" for w in s.strengths] if texts and s.seeds else []
    grid = preview_grid(preview_title(job, rows, s, texts), rows, columns, sweep, s.size)
    atomic_write_bytes(job.preview, encode_png(np.asarray(grid.image)))
    _tensorboard(project_dirs(job.root).log / f"{job.out}-preview", job.name,
                 [(r.label, r.images) for r in rows], job.plan.recipe.steps)
    log.info("preview: %s", job.preview)
    return job.preview
