"""Training samples are encoded the way generated images are: A1111 weighting and the run's clip skip."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from charframe.generation.prompt import encode_pair
from charframe.models.tiny import build_tiny_sd
from charframe.training.samples import sample_images


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_samples_follow_clip_skip_and_equal_the_generation_encoding(tmp_path) -> None:
    comps = build_tiny_sd(seed=0)
    kw = dict(steps=2, size=32, folder=tmp_path)
    [skip1] = sample_images(comps, ["krnk, (smile:1.3)"], [7], stem="a", clip_skip=1, **kw)
    [skip2] = sample_images(comps, ["krnk, (smile:1.3)"], [7], stem="b", clip_skip=2, **kw)
    assert np.abs(_pixels(skip1) - _pixels(skip2)).max() > 0  # clip skip reaches the samples

    from diffusers import DDIMScheduler

    pipe = comps.pipeline(DDIMScheduler.from_config(comps.noise_scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    pos, neg = encode_pair("krnk, (smile:1.3)", "", comps.tokenizer, comps.text_encoder, 2)
    with torch.no_grad():
        ref = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, num_inference_steps=2, height=32, width=32,
                   generator=torch.Generator().manual_seed(7)).images[0]
    assert np.array_equal(np.asarray(ref, dtype=np.int16), _pixels(skip2))
