"""The frozen VAE's latent distributions, kept by the pixels they were made from, so an image met again is not
encoded again.

sd-scripts' `--cache_latents` encodes every image once and keeps one latent *sample*, which is why it refuses
colour augmentation and random crops, and why every later step sees the same noise of the VAE's sampling.
Here the key is the exact pixel content of the (cropped, flipped, colour-jittered) training image, and what is
kept is the latent *distribution* (mean and log-variance, diffusers' `DiagonalGaussianDistribution` parameters):
each step still draws its own latent from its own generator, so a run with the cache computes the same loss as
one without it, augmentation included; an augmented variant is simply another entry. The cache is therefore not
a recipe choice (it changes no result) and is always on in the built-in trainer. Past `limit_bytes` the rest is
encoded every time (an SDXL 1024² entry is 8×128×128 values, 256 KiB in fp16: the default 256 MiB holds 1024 of
them, an SD1.x 512² run 4096).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch

#: what the cache may hold on the training device
LIMIT_BYTES = 256 << 20


def pixel_key(image: torch.Tensor) -> bytes:
    """The content key of one image tensor (C,H,W): its shape, dtype and bytes."""
    data = image.detach().cpu().contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(data.shape), str(data.dtype))).encode())
    h.update(data.numpy().tobytes() if data.dtype != torch.bfloat16 else data.view(torch.int16).numpy().tobytes())
    return h.digest()


class LatentCache:
    """Latent distribution parameters (2·C, h, w) by pixel content, on the device they were made on."""

    def __init__(self, limit_bytes: int = LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.size = 0  # bytes held
        self.entries: dict[bytes, torch.Tensor] = {}
        self.encoded = 0  # images encoded (cache misses), for tests and logs

    def __call__(self, pixels: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The distribution parameters of every image of `pixels` (B,3,H,W, the batch as the data loader gave
        it); `encode(rows)` runs the VAE on the given rows of the batch and returns their parameters."""
        keys = [pixel_key(p) for p in pixels]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each key's first row
        todo = [first[k] for k in dict.fromkeys(keys) if k not in self.entries]
        fresh: dict[bytes, torch.Tensor] = {}
        if todo:
            with torch.no_grad():
                params = encode(pixels[todo])
            self.encoded += len(todo)
            fresh = {keys[i]: params[j].detach().clone() for j, i in enumerate(todo)}
            for key, value in fresh.items():
                nbytes = value.numel() * value.element_size()
                if self.size + nbytes <= self.limit_bytes:
                    self.entries[key] = value
                    self.size += nbytes
        return torch.stack([self.entries[k] if k in self.entries else fresh[k] for k in keys])


def sample_latents(vae: Any, pixels: torch.Tensor, gen: torch.Generator, device: Any, dtype: Any,
                   cache: LatentCache | None = None) -> torch.Tensor:
    """Scaled latents of a batch, each drawn from its VAE distribution with `gen` (the same numbers with or without
    the cache)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    def encode(rows: torch.Tensor) -> torch.Tensor:
        return vae.encode(rows.to(device, dtype, non_blocking=True)).latent_dist.parameters

    with torch.no_grad():
        params = encode(pixels) if cache is None else cache(pixels, encode)
        latents = DiagonalGaussianDistribution(params).sample(generator=gen)
    return latents.float() * vae.config.scaling_factor
