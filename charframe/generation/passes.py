"""The two diffusion passes of one image: diffusers' ControlNet pipeline for the first pass, its img2img ControlNet
pipeline for the hires pass. Shared by `generate_set` and the benchmark, so both time the same code.

Seeds: the initial noise (and an ancestral sampler's noise) comes from a CPU generator seeded per image, as
WebUI does by default, so a seed gives the same picture on any device up to kernel differences, and exactly
the same pixels on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from charframe.models.components import SDComponents


@dataclass(frozen=True)
class PassSettings:
    """What one image needs besides its prompt, seed and control images."""

    steps: int
    cfg: float
    weights: tuple[float, ...]
    starts: tuple[float, ...]
    ends: tuple[float, ...]
    hires_scale: float = 1.0
    hires_denoise: float = 0.7
    hires_steps: int = 0


#: schedulers whose noise does not come from the per-image generators (DPM++ SDE's Brownian tree is seeded once
#: per call): a batch would not give each seed its own picture, so their candidates are made one at a time
UNBATCHED = frozenset({"DPMSolverSDEScheduler"})


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hires pass's size: scaled, multiples of 8."""
    return round(width * scale / 8) * 8, round(height * scale / 8) * 8


class Runner:
    """The pipelines over one loaded model, its ControlNet(s) and scheduler (built once, reused per image)."""

    def __init__(self, comps: SDComponents, controlnets: list[Any], scheduler: Any) -> None:
        from diffusers import (
            MultiControlNetModel, StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetPipeline,
        )

        self.multi = len(controlnets) > 1
        controlnet = MultiControlNetModel(controlnets) if self.multi else controlnets[0]
        parts = dict(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
                     controlnet=controlnet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                     requires_safety_checker=False)
        self.txt2img = StableDiffusionControlNetPipeline(**parts)
        self.img2img = StableDiffusionControlNetImg2ImgPipeline(**parts)
        for pipe in (self.txt2img, self.img2img):
            pipe.set_progress_bar_config(disable=True)
        self.device = comps.unet.device

    def _control_args(self, s: PassSettings) -> dict[str, Any]:
        if self.multi:
            return dict(controlnet_conditioning_scale=list(s.weights), control_guidance_start=list(s.starts),
                        control_guidance_end=list(s.ends))
        return dict(controlnet_conditioning_scale=s.weights[0], control_guidance_start=s.starts[0],
                    control_guidance_end=s.ends[0])

    def _generator(self, seed: int) -> Any:
        import torch

        return torch.Generator("cpu").manual_seed(int(seed))

    def image(self, pos: Any, neg: Any, controls: list[Image.Image], seed: int, s: PassSettings,
              hires_controls: list[Image.Image] | None = None) -> Image.Image:
        """One finished image (first pass, then the hires pass when `hires_scale` > 1)."""
        import torch

        width, height = controls[0].size
        control = controls if self.multi else controls[0]
        with torch.inference_mode():
            first = self.txt2img(
                prompt_embeds=pos, negative_prompt_embeds=neg, image=control, width=width, height=height,
                num_inference_steps=s.steps, guidance_scale=s.cfg, generator=self._generator(seed),
                output_type="pil", **self._control_args(s),
            ).images[0]
            if s.hires_scale <= 1:
                return first
            size = hires_size(width, height, s.hires_scale)
            hi = hires_controls or [c.resize(size, Image.LANCZOS) for c in controls]
            return self.img2img(
                prompt_embeds=pos, negative_prompt_embeds=neg, image=first.resize(size, Image.LANCZOS),
                control_image=hi if self.multi else hi[0], width=size[0], height=size[1],
                strength=s.hires_denoise, num_inference_steps=s.hires_steps or s.steps, guidance_scale=s.cfg,
                generator=self._generator(seed), output_type="pil", **self._control_args(s),
            ).images[0]

    @property
    def batches(self) -> bool:
        """Whether `images` gives each seed its own picture with this scheduler (see UNBATCHED)."""
        return type(self.txt2img.scheduler).__name__ not in UNBATCHED

    def images(self, pos: Any, neg: Any, controls: list[Image.Image], seeds: Sequence[int], s: PassSettings,
               hires_controls: list[Image.Image] | None = None) -> list[Image.Image]:
        """The finished images of several seeds in one batch: same prompt, control maps and settings, each seed
        with its own CPU generator (initial noise, sampler noise, the hires pass's noise), so each picture is the
        one `image` gives for that seed alone (bit for bit on the CPU; within kernel differences on a GPU)."""
        import torch

        n = len(seeds)
        width, height = controls[0].size
        control = controls if self.multi else controls[0]
        with torch.inference_mode():
            first = self.txt2img(
                prompt_embeds=pos, negative_prompt_embeds=neg, image=control, width=width, height=height,
                num_images_per_prompt=n, num_inference_steps=s.steps, guidance_scale=s.cfg,
                generator=[self._generator(x) for x in seeds], output_type="pil", **self._control_args(s),
            ).images
            if s.hires_scale <= 1:
                return first
            size = hires_size(width, height, s.hires_scale)
            hi = hires_controls or [c.resize(size, Image.LANCZOS) for c in controls]
            return self.img2img(
                prompt_embeds=pos, negative_prompt_embeds=neg, image=[f.resize(size, Image.LANCZOS) for f in first],
                control_image=hi if self.multi else hi[0], width=size[0], height=size[1], num_images_per_prompt=n,
                strength=s.hires_denoise, num_inference_steps=s.hires_steps or s.steps, guidance_scale=s.cfg,
                generator=[self._generator(x) for x in seeds], output_type="pil", **self._control_args(s),
            ).images
