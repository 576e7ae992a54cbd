"""Sample images at fixed seeds from the current model state, to watch a LoRA grow during training.

Prompts are encoded the way generated images are (`generation.prompt.encode_pair`: A1111 weighting, 75-token
chunks, the run's clip skip), so a sample shows what the LoRA does under the conditioning it is trained with.
Families with more than one text encoder (SDXL) have their prompts encoded by their diffusers pipeline (its
penultimate-layer states and pooled embedding, no A1111 weighting) until generation supports them.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from charframe.generation.prompt import encode_pair


def sample_images(
    comps: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    size: int,
    folder: Path,
    stem: str,
    clip_skip: int = 1,
    autocast: Callable[[], Any] = nullcontext,
    embeddings: Any = None,
) -> list[Path]:
    """DDIM images of every prompt × seed, saved as `<folder>/<stem>_<i>_<seed>.png`; the models' train/eval mode
    is restored. `embeddings` (an `EmbeddingSet`: a pivotal run's trigger as it is now) are called by the prompts."""
    from diffusers import DDIMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    pipe = comps.pipeline(DDIMScheduler.from_config(comps.noise_scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    was_training = [m.training for m in (comps.unet, *comps.text_encoders)]
    for m in (comps.unet, *comps.text_encoders):
        m.eval()
    paths = []
    try:
        with torch.no_grad(), autocast():
            for i, prompt in enumerate(prompts):
                if len(comps.text_encoders) > 1:
                    prompt_args = {"prompt": prompt, "negative_prompt": ""}
                else:
                    pos, neg = encode_pair(prompt, "", comps.tokenizer, comps.text_encoder, clip_skip, embeddings)
                    prompt_args = {"prompt_embeds": pos, "negative_prompt_embeds": neg}
                for seed in seeds:
                    gen = torch.Generator().manual_seed(int(seed))
                    image = pipe(**prompt_args, num_inference_steps=steps, height=size, width=size,
                                 generator=gen).images[0]
                    path = folder / f"{stem}_{i}_{seed}.png"
                    image.save(path)
                    paths.append(path)
    finally:
        for m, mode in zip((comps.unet, *comps.text_encoders), was_training):
            m.train(mode)
    return paths
