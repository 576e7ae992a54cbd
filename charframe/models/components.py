"""`SDComponents`: the parts of an SD1.x model as one bundle, what loading produces and training and generation
consume. Imports nothing of charframe, so every loader can produce it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SDComponents:
    """The parts of an SD1.x model. `noise_scheduler` is the base model's DDPM training schedule."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    info: dict[str, Any] = field(default_factory=dict)

    def pipeline(self, scheduler: Any = None) -> Any:
        """A diffusers `StableDiffusionPipeline` over these components (no safety checker)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        if scheduler is None:
            scheduler = DDIMScheduler.from_config(self.noise_scheduler.config)
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
