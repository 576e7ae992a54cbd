"""`SDComponents`: the parts of a Stable Diffusion model as one bundle, what loading produces and training and
generation consume. Families with a second text encoder (SDXL) fill `text_encoder_2`/`tokenizer_2`; `family`
names the model family (`charframe.families`) so every consumer can ask it instead of guessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from charframe.families.family import get_family


@dataclass
class SDComponents:
    """The parts of a model. `noise_scheduler` is the base model's DDPM training schedule."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    info: dict[str, Any] = field(default_factory=dict)
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    family: str = "sd15"

    @property
    def text_encoders(self) -> list[Any]:
        """Every text encoder, in the family's conditioning order."""
        return [getattr(self, te.component) for te in get_family(self.family).text_encoders]

    @property
    def tokenizers(self) -> list[Any]:
        return [getattr(self, te.tokenizer) for te in get_family(self.family).text_encoders]

    def modules(self) -> list[Any]:
        """UNet, VAE and the text encoders: what is placed, frozen and switched to eval together."""
        return [self.unet, self.vae, *self.text_encoders]

    def pipeline(self, scheduler: Any = None) -> Any:
        """The family's diffusers text-to-image pipeline over these components (no safety checker, no watermark)."""
        import diffusers
        from diffusers import DDIMScheduler

        if scheduler is None:
            scheduler = DDIMScheduler.from_config(self.noise_scheduler.config)
        fam = get_family(self.family)
        spec = fam.data.get("diffusers", {})
        parts = {"unet": self.unet, "vae": self.vae, "scheduler": scheduler}
        for te in fam.text_encoders:
            parts[te.component], parts[te.tokenizer] = getattr(self, te.component), getattr(self, te.tokenizer)
        parts |= {name: None for name in spec.get("none_args", ())} | dict(spec.get("args", {}))
        return getattr(diffusers, spec["pipeline"])(**parts)
