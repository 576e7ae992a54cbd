"""Sample images at fixed seeds from the current model state, to watch a LoRA grow during training.

Prompts are encoded the way generated images are (`generation.prompt.encode_pair`: A1111 weighting, 75-token
chunks, the run's clip skip), so a sample shows what the LoRA does under the conditioning it is trained with.
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
    was_training = comps.unet.training
    comps.unet.eval()
    comps.text_encoder.eval()
    paths = []
    try:
        with torch.no_grad(), autocast():
            for i, prompt in enumerate(prompts):
                pos, neg = encode_pair(prompt, "", comps.tokenizer, comps.text_encoder, clip_skip, embeddings)
                for seed in seeds:
                    gen = torch.Generator().manual_seed(int(seed))
                    image = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, num_inference_steps=steps,
                                 height=size, width=size, generator=gen).images[0]
                    path = folder / f"{stem}_{i}_{seed}.png"
                    image.save(path)
                    paths.append(path)
    finally:
        comps.unet.train(was_training)
        comps.text_encoder.train(was_training)
    return paths
