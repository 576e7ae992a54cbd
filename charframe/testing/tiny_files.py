"""Tiny-model files for tests and benchmarks: the tiny random SD1.x and SDXL models (charframe.models.tiny) saved
the ways users' models come — a diffusers folder, a configs-only folder, one LDM-layout checkpoint
(`.safetensors` / `.ckpt`)."""

from __future__ import annotations

from pathlib import Path

from typing import Any

from charframe.models.tiny import build_tiny_sd, build_tiny_sdxl
from charframe.testing.ldm_layout import to_ldm_checkpoint, to_sdxl_checkpoint


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
    return _save_configs(build_tiny_sd(0, tokenizer_dir=directory / "tokenizer"), directory)


def _save_configs(comps: Any, directory: Path) -> Path:
    for name in ("unet", "vae"):
        getattr(comps, name).save_config(str(directory / name))
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(comps, name) is not None:
            getattr(comps, name).config.save_pretrained(str(directory / name))
    comps.noise_scheduler.save_config(str(directory / "scheduler"))
    return directory


def save_tiny_sdxl(directory: str | Path, seed: int = 0, **kw: Any) -> Path:
    """Save the tiny SDXL model as a diffusers folder (model_index.json + component folders)."""
    directory = Path(directory)
    comps = build_tiny_sdxl(seed, tokenizer_dir=directory, **kw)
    comps.pipeline().save_pretrained(str(directory), safe_serialization=True)
    return directory


def save_tiny_sdxl_config(directory: str | Path) -> Path:
    """The tiny SDXL model's configs and both tokenizers, without weights (with `model_index.json`, so diffusers'
    `from_single_file(config=...)` reads it too): the `config=` of a tiny SDXL single file."""
    import json

    directory = Path(directory)
    comps = build_tiny_sdxl(0, tokenizer_dir=directory)
    _save_configs(comps, directory)
    index = {"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    (directory / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return directory


#: NoobAI-XL v-prediction files mark themselves with these (empty) tensors
V_PRED_MARKS = ("v_pred", "ztsnr")


def save_tiny_sdxl_single_file(path: str | Path, seed: int = 0, *, with_vae: bool = True, v_pred: bool = False,
                               drop: tuple[str, ...] = ()) -> Path:
    """The tiny SDXL model as ONE checkpoint in the original layout (CLIP-L under `conditioner.embedders.0`,
    OpenCLIP-G under `conditioner.embedders.1`). `v_pred` adds NoobAI's marker keys; `drop` leaves out every
    key with one of these prefixes (a Pony/Illustrious file shared without a text encoder)."""
    import torch

    comps = build_tiny_sdxl(seed)
    state = to_sdxl_checkpoint(comps.unet, comps.vae, comps.text_encoder, comps.text_encoder_2)
    if v_pred:
        state |= {k: torch.zeros(0) for k in V_PRED_MARKS}
    drop = drop + (() if with_vae else ("first_stage_model.",))
    return _write_state(path, {k: v for k, v in state.items() if not k.startswith(drop)})


def _write_state(path: str | Path, state: dict[str, Any]) -> Path:
    """`.safetensors`, or the old `{"state_dict": ...}` pickle for `.ckpt`/`.pt`."""
    import torch

    path = Path(path)
    state = {k: v.contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save({"state_dict": state}, str(path))
    return path


def save_tiny_single_file(path: str | Path, seed: int = 0, *, with_vae: bool = True) -> Path:
    """Save the tiny model as ONE checkpoint in the original LDM/CompVis key layout (the layout of
    community `.safetensors`/`.ckpt` files). `.ckpt`/`.pt` are written the old way: `{"state_dict": ...}`."""
    comps = build_tiny_sd(seed)
    state = to_ldm_checkpoint(comps.unet, comps.vae, comps.text_encoder)
    if not with_vae:
        state = {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}
    return _write_state(path, state)
