"""Tiny-model files for tests and benchmarks: the tiny random SD1.x (charframe.models.tiny) saved the ways users'
models come — a diffusers folder, a configs-only folder, one LDM-layout checkpoint (`.safetensors` / `.ckpt`)."""

from __future__ import annotations

from pathlib import Path

from charframe.models.tiny import build_tiny_sd
from charframe.testing.ldm_layout import to_ldm_checkpoint


def save_tiny_sd(directory: str | Path, seed: int = 0) -> Path:
    """Save the tiny model as a diffusers folder (model_index.json + component folders)."""
    directory = Path(directory)
    comps = build_tiny_sd(seed, tokenizer_dir=directory / "tokenizer")
    comps.pipeline().save_pretrained(str(directory), safe_serialization=True)
    return directory


def save_tiny_config(directory: str | Path) -> Path:
    """The tiny model's component configs and tokenizer as a diffusers folder WITHOUT weights: the
    `config=` that makes a tiny single-file checkpoint loadable (its shapes are not SD1.5's)."""
    directory = Path(directory)
    comps = build_tiny_sd(0, tokenizer_dir=directory / "tokenizer")
    for name in ("unet", "vae"):
        getattr(comps, name).save_config(str(directory / name))
    comps.text_encoder.config.save_pretrained(str(directory / "text_encoder"))
    comps.noise_scheduler.save_config(str(directory / "scheduler"))
    return directory


def save_tiny_single_file(path: str | Path, seed: int = 0, *, with_vae: bool = True) -> Path:
    """Save the tiny model as ONE checkpoint in the original LDM/CompVis key layout (the layout of
    community `.safetensors`/`.ckpt` files). `.ckpt`/`.pt` are written the old way: `{"state_dict": ...}`."""
    import torch

    path = Path(path)
    comps = build_tiny_sd(seed)
    state = to_ldm_checkpoint(comps.unet, comps.vae, comps.text_encoder)
    if not with_vae:
        state = {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}
    state = {k: v.contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save({"state_dict": state}, str(path))
    return path
