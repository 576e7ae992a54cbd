"""Fixed-seed pictures of a stage's base model with a LoRA on it: what the preview grid and the score step draw.

One loader for both (`load_drawer`: the stage's model family, prediction type, VAE and the training's clip skip),
so a checkpoint is scored on the model it was trained for (an SDXL stage is drawn by SDXL, with both text
encoders) and the preview shows what the score step judged. Pictures are drawn in batches on a GPU (the size from
`generation.batch`, the table generation uses): each picture's starting noise comes from its own seed's generator
and the sampler (DDIM) adds none, so a seed draws the same picture alone or in a batch, as in WebUI's batches. On
the CPU a batch is one picture (a CPU is no faster per picture in batches).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image

from charframe.generation.batch import batch_size
from charframe.generation.embeddings import PromptEmbeddings
from charframe.generation.face_lora import lora_applied
from charframe.generation.families import conditioning, encode_prompts, pipeline_args
from charframe.generation.prompt import encode_pair
from charframe.models.clip import check_clip_skip
from charframe.models.load import load_sd
from charframe.pipeline.preview_spec import PreviewSettings
from charframe.pipeline.stages import StageJob


@dataclass
class Drawer:
    """The loaded base model of a stage: its diffusers pipeline and components (the family's text encoders)."""

    pipe: Any
    comps: Any
    clip_skip: int

    @property
    def encoders(self) -> Any:
        """What a LoRA's text-encoder part goes into: SDXL's two encoders, or SD1's one."""
        return self.comps.text_encoders if len(self.comps.text_encoders) > 1 else self.pipe.text_encoder

    @contextlib.contextmanager
    def lora(self, path: Path | None, weight: float = 1.0) -> Iterator[None]:
        """`path` merged into the model inside the block (None: the base model), the exact weights back after."""
        if path is None:
            yield
            return
        with lora_applied(self.pipe.unet, self.encoders, path, weight):
            yield

    def draw(self, texts: Sequence[str], negative: str, s: PreviewSettings, bar: Any = None,
             embeddings: PromptEmbeddings | None = None, batch: int | None = None) -> list[Image.Image]:
        """`render_row` with this model."""
        return render_row(self.pipe, texts, negative, s, self.clip_skip, bar, embeddings, self.comps, batch)


def load_drawer(job: StageJob) -> Drawer:
    """The stage's base model (float16 on a GPU), its clip skip checked against the text encoder."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    comps = load_sd(job.plan.io.model, job.plan.io.vae, dtype=torch.float16 if device == "cuda" else None, device=device,
                    family=job.plan.io.family, prediction=job.plan.io.prediction)
    check_clip_skip(job.plan.recipe.clip_skip, comps.text_encoder, f"{job.character.path}: generation.clip_skip")
    pipe = comps.pipeline()
    pipe.set_progress_bar_config(disable=True)
    return Drawer(pipe, comps, job.plan.recipe.clip_skip)


def render_row(pipe: Any, texts: Sequence[str], negative: str, s: PreviewSettings, clip_skip: int,
               bar: Any = None, embeddings: PromptEmbeddings | None = None, comps: Any = None,
               batch: int | None = None) -> list[Image.Image]:
    """One image per (prompt, seed), in that order, each from its own seeded generator; prompts are encoded as
    generated images are, with the clip skip of training and `embeddings` (checked against the model here). With
    `comps` of a family that generation encodes its own way (SDXL: both encoders, pooled), prompts go through
    `generation.families` (textual-inversion embeddings are SD1.x's). `batch`: pictures per pipeline call (None:
    `generation.batch`'s size for the device and picture size; pictures whose prompts encode to different lengths
    are never put in one call)."""
    import torch

    clip = comps is None or conditioning(comps.family) == "clip"
    lookup = embeddings.lookup(pipe.tokenizer, pipe.text_encoder) if embeddings is not None and clip else None
    jobs: list[tuple[dict[str, Any], int]] = []
    for text in texts:
        with torch.no_grad():
            if clip:
                prompt_embeds, negative_embeds = (e.to(pipe.unet.dtype) for e in encode_pair(
                    text, negative, pipe.tokenizer, pipe.text_encoder, clip_skip, lookup))
                prompt_args = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds)
            else:
                prompt_args = pipeline_args(*encode_prompts(comps, text, negative, clip_skip), pipe.unet.dtype)
        jobs += [(prompt_args, int(seed)) for seed in s.seeds]
    if batch is None:
        batch = batch_size(str(pipe.device), s.size, s.size, 1.0, max(1, len(jobs)))
    images: list[Image.Image] = []
    for group in _batches(jobs, max(1, batch)):
        args = {k: torch.cat([a[k] for a, _ in group]) for k in group[0][0]}
        generators = [torch.Generator(device=pipe.device).manual_seed(seed) for _, seed in group]
        out = pipe(**args, num_inference_steps=s.steps, guidance_scale=s.cfg, height=s.size, width=s.size,
                   generator=generators if len(generators) > 1 else generators[0], output_type="pil")
        images += [img.convert("RGB") for img in out.images]
        if bar is not None:
            bar.update(len(group))
    return images


def _batches(jobs: list[tuple[dict[str, Any], int]], size: int) -> Iterator[list[tuple[dict[str, Any], int]]]:
    """Consecutive runs of at most `size` jobs whose conditioning tensors have the same shapes."""
    def shapes(job: tuple[dict[str, Any], int]) -> tuple[Any, ...]:
        return tuple((k, tuple(v.shape)) for k, v in sorted(job[0].items()))

    group: list[tuple[dict[str, Any], int]] = []
    for job in jobs:
        if group and (len(group) == size or shapes(group[0]) != shapes(job)):
            yield group
            group = []
        group.append(job)
    if group:
        yield group
