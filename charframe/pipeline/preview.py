"""Preview grids: the base model, the LoRA, the merged and the compressed LoRA side by side on fixed prompts.

Rows are the four models, columns the scenes × seeds of `preview_spec` (the character in five different
places, as DreamBooth's evaluation does, so overfitting shows); every image of a column shares its prompt and
seed, so differences come from the model alone. One labelled PNG beside the LoRA
(`LoRAOutput/<out>/<out>-<stage>-preview.png`) and the same rows as TensorBoard images
(`LoRALog/<out>-preview/`, tag `<stage>/<model>`, step = training steps).
Each LoRA is merged into the loaded model's weights for its row and the exact weights are put back after it
(`generation.face_lora.lora_applied`, the same code that applies the face LoRA when generating the body set): every
kind charframe writes (LoRA, LoCon, LoHa, LoKr) is drawn, with no extra dependency (diffusers' own LoRA loader
needs peft and reads no LoHa). A file that does not fit the model gets a grey tile that says so.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from charframe.errors import CharframeError
from charframe.generation.face_lora import lora_applied
from charframe.generation.families import conditioning, encode_prompts, pipeline_args
from charframe.models.clip import check_clip_skip
from charframe.models.load import load_sd
from charframe.pipeline.preview_spec import PreviewSettings, preview_settings, prompts
from charframe.pipeline.stages import StageJob
from charframe.project import project_dirs
from charframe.templates.writer import encode_png
from charframe.training.text import encode, tokenize
from charframe.util.files import atomic_write_bytes

log = logging.getLogger(__name__)

LABEL_W, HEAD_H, MIN_TILE = 96, 30, 128
GREY = (96, 96, 96)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_row(pipe: Any, texts: Sequence[str], negative: str, s: PreviewSettings, clip_skip: int,
               bar: Any = None, comps: Any = None) -> list[Image.Image]:
    """One image per (prompt, seed), each from its own seeded generator; prompts are encoded with the clip
    skip of training (`training.text.encode`, as sd-scripts and the WebUI do). With `comps` of a family that
    generation encodes its own way (SDXL: both encoders, pooled), prompts go through `generation.families`."""
    import torch

    def embed(text: str) -> Any:
        with torch.no_grad():
            return encode(pipe.text_encoder, tokenize(pipe.tokenizer, [text]), clip_skip).to(pipe.unet.dtype)

    def pair(text: str) -> dict[str, Any]:
        if comps is not None and conditioning(comps.family) != "clip":
            with torch.no_grad():
                return pipeline_args(*encode_prompts(comps, text, negative, clip_skip), pipe.unet.dtype)
        return dict(prompt_embeds=embed(text), negative_prompt_embeds=negative_embeds)

    images = []
    negative_embeds = embed(negative) if comps is None or conditioning(comps.family) == "clip" else None
    for text in texts:
        prompt_args = pair(text)
        for seed in s.seeds:
            g = torch.Generator(device=pipe.device).manual_seed(int(seed))
            out = pipe(**prompt_args, num_inference_steps=s.steps,
                       guidance_scale=s.cfg, height=s.size, width=s.size, generator=g, output_type="pil")
            images.append(out.images[0].convert("RGB"))
            if bar is not None:
                bar.update(1)
    return images


def _tile(text: str, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), GREY)
    ImageDraw.Draw(img).multiline_text((4, 4), text, fill=(255, 255, 255), font=_font(10))
    return img


def _fit(text: str, font: Any, width: int) -> str:
    while text and font.getlength(text) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def labelled_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], columns: Sequence[str], size: int) -> Image.Image:
    """Rows of equal-size tiles with the model name on the left and the column names on top."""
    size = max(size, MIN_TILE)  # tiny-model previews are shown enlarged so the labels fit
    n = max(len(images) for _, images in rows)
    grid = Image.new("RGB", (LABEL_W + n * size, HEAD_H + len(rows) * size), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _font(11)
    for j, name in enumerate(columns):
        lines = [_fit(line, font, size - 6) for line in name.split("\n")]
        draw.multiline_text((LABEL_W + j * size + 3, 2), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=1)
    for i, (label, images) in enumerate(rows):
        y = HEAD_H + i * size
        draw.text((4, y + size // 2 - 6), label, fill=(0, 0, 0), font=font)
        for j, img in enumerate(images):
            grid.paste(img.resize((size, size), Image.Resampling.NEAREST), (LABEL_W + j * size, y))
    return grid


def _tensorboard(log_dir: Path, stage: str, rows: Sequence[tuple[str, Sequence[Image.Image]]], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as w:
        for label, images in rows:
            strip = np.concatenate([np.asarray(img) for img in images], axis=1)
            w.add_image(f"{stage}/{label}", strip, global_step=step, dataformats="HWC")


def preview_job(job: StageJob, *, progress: bool = True) -> Path:
    """Draw the grid of one stage (base, LoRA, merged, compressed) and log it to TensorBoard."""
    import torch

    s = preview_settings(job.root, job.plan.io.model is None, job.family)
    texts = prompts(job.members, s)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    comps = load_sd(job.plan.io.model, job.plan.io.vae, dtype=torch.float16 if device == "cuda" else None, device=device,
                    family=job.plan.io.family, prediction=job.plan.io.prediction)
    check_clip_skip(job.plan.recipe.clip_skip, comps.text_encoder, f"{job.character.path}: generation.clip_skip")
    pipe = comps.pipeline()
    pipe.set_progress_bar_config(disable=True)
    variants = [("base", None), ("LoRA", job.lora), ("merged", job.merged), ("compressed", job.compressed)]
    rows: list[tuple[str, list[Image.Image]]] = []
    total = len(variants) * len(texts) * len(s.seeds)
    with tqdm(total=total, desc=f"preview {job.out}", unit="img", disable=not progress, leave=False) as bar:
        for label, lora in variants:
            try:
                encoders = comps.text_encoders if len(comps.text_encoders) > 1 else comps.text_encoder
                with lora_applied(pipe.unet, encoders, lora) if lora is not None else contextlib.nullcontext():
                    rows.append((label, render_row(pipe, texts, job.character.negative, s, job.plan.recipe.clip_skip, bar,
                                                   comps)))
            except CharframeError as e:
                log.warning("%s; its preview row is left grey", e)
                rows.append((label, [_tile(f"{label}:\ndoes not fit\nthis model", s.size)] * (len(texts) * len(s.seeds))))
                bar.update(len(texts) * len(s.seeds))
    columns = [f"{scene}\nseed {seed}" for scene in s.scenes for seed in s.seeds]
    grid = labelled_grid(rows, columns, s.size)
    atomic_write_bytes(job.preview, encode_png(np.asarray(grid)))
    _tensorboard(project_dirs(job.root).log / f"{job.out}-preview", job.name, rows, job.plan.recipe.steps)
    log.info("preview: %s", job.preview)
    return job.preview
