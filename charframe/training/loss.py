"""One batch's loss, as sd-scripts computes it for LoRA training, from generators that depend on (seed, step, rank).

VAE latents × scaling factor, noise (plus the optional offset) added at a uniform random timestep of the
base model's DDPM schedule (zero terminal SNR when the model says so), the UNet predicts the noise (or the
velocity for v-prediction models) from the caption's conditioning for the model's family
(`training.conditioning`), per-item MSE weighted (reg images by prior_loss_weight; min-SNR or debiased
estimation weighting as sd-scripts' `apply_snr_weight` / `apply_debiased_estimation`).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
import torch

from charframe.models.embeddings import EmbeddingSet
from charframe.training.conditioning import TextCache, condition
from charframe.training.plan import Recipe


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one step on one process: never the global RNG, so a resumed run draws the same numbers."""
    value = int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(value & 0x7FFF_FFFF_FFFF_FFFF)


def denoise_loss(
    comps: Any,
    pixels: torch.Tensor,
    captions: list[str],
    weights: torch.Tensor,
    gen: torch.Generator,
    *,
    recipe: Recipe,
    device: torch.device,
    weight_dtype: torch.dtype = torch.float32,
    autocast: Callable[[], Any] = nullcontext,
    timesteps: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    sizes: Any = (),
    text_cache: TextCache | None = None,
    embeddings: EmbeddingSet | None = None,
) -> torch.Tensor:
    """One batch's loss: the UNet's noise prediction error at random (or given) timesteps, reg-weighted,
    optionally weighted per pixel by alpha `masks` (B,H,W). `sizes` (file w, h, flipped per image) give SDXL's
    time ids; `text_cache` keeps frozen text encoders' outputs; captions call `embeddings` (pivotal tuning)."""
    sched = comps.noise_scheduler
    with torch.no_grad():
        pixels = pixels.to(device, weight_dtype, non_blocking=True)
        latents = comps.vae.encode(pixels).latent_dist.sample(generator=gen).float() * comps.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen).to(device)
    if recipe.noise_offset:
        noise += recipe.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen).to(device)
    if timesteps is None:
        timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    timesteps = timesteps.to(device)
    noisy = sched.add_noise(latents, noise, timesteps)
    target = sched.get_velocity(latents, noise, timesteps) if sched.config.prediction_type == "v_prediction" else noise
    bucket = (int(pixels.shape[-1]), int(pixels.shape[-2]))
    with autocast():
        states, added = condition(comps, captions, recipe, sizes=sizes, bucket=bucket, cache=text_cache,
                                  embeddings=embeddings)
        if added is not None:
            added = {k: v.to(weight_dtype) for k, v in added.items()}
        pred = comps.unet(noisy.to(weight_dtype), timesteps, states.to(weight_dtype), added_cond_kwargs=added).sample
    per_item = masked_mse(pred.float(), target.float(), None if masks is None else masks.to(device))
    per_item = per_item * snr_weights(sched, timesteps, recipe)
    return (per_item * weights.to(device)).mean()


def all_snr(sched: Any) -> torch.Tensor:
    """Signal-to-noise ratio of every training timestep: ᾱ / (1 − ᾱ) (0 at the end with zero terminal SNR)."""
    ac = sched.alphas_cumprod.float()
    return (ac.sqrt() / (1.0 - ac).sqrt()) ** 2


def snr_weights(sched: Any, timesteps: torch.Tensor, recipe: Recipe) -> torch.Tensor | float:
    """Per-item loss weights of sd-scripts' min-SNR-γ (`apply_snr_weight`) and debiased estimation
    (`apply_debiased_estimation`), both for v-prediction too; 1 when neither is on."""
    if not recipe.min_snr_gamma and not recipe.debiased_estimation:
        return 1.0
    snr = all_snr(sched).to(timesteps.device)[timesteps]
    v_pred = sched.config.prediction_type == "v_prediction"
    weight = torch.ones_like(snr)
    if recipe.min_snr_gamma:
        gamma = torch.minimum(snr, torch.full_like(snr, recipe.min_snr_gamma))
        weight = weight * (gamma / (snr + 1) if v_pred else gamma / snr)
    if recipe.debiased_estimation:
        clipped = torch.minimum(snr, torch.full_like(snr, 1000.0))
        weight = weight * (1 / (clipped + 1) if v_pred else 1 / clipped.sqrt())
    return weight


def masked_mse(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item mean squared error; with `masks` (B,H,W in [0, 1], image size) each latent pixel's error
    is weighted by the mask's area average over that pixel's footprint (sd-scripts' `apply_masked_loss`)
    and the mean still taken over every latent pixel (so a half-transparent image has half the loss)."""
    loss = torch.nn.functional.mse_loss(pred, target, reduction="none")
    if masks is not None:
        loss = loss * torch.nn.functional.interpolate(masks.unsqueeze(1).to(loss.dtype), size=loss.shape[2:], mode="area")
    return loss.mean(dim=(1, 2, 3))
