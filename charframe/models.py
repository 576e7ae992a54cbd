"""Stable Diffusion 1.x model components as one small bundle, and the loading that produces them.

`SDComponents` is what loading produces and what training and generation consume. `load_sd` accepts
what users of sd-scripts / WebUI / ComfyUI have on disk: a single-file checkpoint, a diffusers folder,
or nothing (the tiny random demo model), plus an optional separate VAE. Loading never reaches the
network: what a single file lacks (component configs, the CLIP tokenizer) ships in `charframe/data/`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charframe.deps import place
from charframe.errors import CharframeError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


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


DEMO_WARNING = (
    "no base model given: using charframe's tiny RANDOM demo model (it produces noise, not pictures). "
    "Pass a real SD1.x model with --model, e.g. --model LoRAInput/v1-5-pruned-emaonly.safetensors "
    "(a .safetensors/.ckpt single file or a diffusers folder)."
)


def load_sd(
    model: PathLike | None = None,
    vae: PathLike | None = None,
    *,
    config: PathLike | None = None,
    dtype: Any = None,
    device: Any = "cpu",
) -> SDComponents:
    """Load an SD1.x model (single file, diffusers folder, or None = tiny demo) and an optional VAE.

    `config` is only for single files whose shapes are not SD1.5's: a diffusers folder (its component
    `config.json`s and tokenizer; weights there are ignored) or the original LDM `.yaml`; a `<name>.yaml`
    beside the checkpoint is picked up by itself. `vae`: a VAE file (LDM or diffusers layout, as
    `.safetensors`/`.ckpt`) or a diffusers (vae) folder. `dtype` defaults to float32; modules are
    returned in eval mode on `device`. Unsupported architectures (SD2, SDXL, inpainting, SD3, Flux, a
    LoRA, ...) raise `CharframeError` before anything is built; `.ckpt` files are only read with
    torch's weights-only unpickler.

    `info` always has `base_model_version` ("sd_v1"), `prediction_type`, `source` ("tiny", "diffusers",
    "single_file") and `model_name`; for real models also sd-scripts' `ss_sd_model_name`,
    `ss_sd_model_hash` (WebUI legacy hash), `ss_new_sd_model_hash` (sha256), and with a VAE `ss_vae_name`,
    `ss_vae_hash`, `ss_new_vae_hash` (folders give sd-scripts' "IsADirectory").
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if model is None:
        log.warning(DEMO_WARNING)
        from charframe.tiny import build_tiny_sd

        comps = build_tiny_sd(seed=0)
        comps.info.update({"source": "tiny", "model_name": comps.info["name"]})
    else:
        path = Path(model).expanduser()
        if not path.exists():
            raise CharframeError(f"{path}: model not found (pass a .safetensors/.ckpt file or a diffusers folder)")
        if path.is_dir():
            if config is not None:
                log.warning("--config %s ignored: %s is a diffusers folder with its own configs", config, path)
            comps = _load_diffusers_folder(path, dtype)
        else:
            from charframe.single_file import load_single_file

            comps = load_single_file(path, config=config, dtype=dtype)
    if vae is not None:
        from charframe.vae import load_vae

        vae_path = Path(vae).expanduser()
        comps.vae = load_vae(vae_path, like=comps.vae, dtype=dtype)
        comps.info.update(_file_identity(vae_path, "vae"))
    elif comps.vae.device.type == "meta":
        raise CharframeError(
            f"{comps.info.get('model_path', model)}: the checkpoint has no VAE weights (first_stage_model.*); "
            "pass one with --vae (e.g. vae-ft-mse-840000-ema-pruned.safetensors)"
        )
    comps.info.setdefault("base_model_version", "sd_v1")
    comps.info.setdefault("prediction_type", comps.noise_scheduler.config.prediction_type)
    for m in (comps.unet, comps.vae, comps.text_encoder):
        place(m, device, dtype).eval()
    return comps


def _load_diffusers_folder(path: Path, dtype: Any) -> SDComponents:
    """A diffusers SD1.x folder (model_index.json + unet/vae/text_encoder/tokenizer/scheduler)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from charframe.architecture import check_diffusers_folder

    check_diffusers_folder(path)
    kw = dict(local_files_only=True, torch_dtype=dtype, variant=_variant(path / "unet"))
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path), subfolder="unet", **kw)
        kw["variant"] = _variant(path / "vae")
        vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", **kw)
        kw["variant"] = _variant(path / "text_encoder")
        text_encoder = CLIPTextModel.from_pretrained(str(path), subfolder="text_encoder", **kw)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CharframeError(f"{path}: cannot load this diffusers folder: {exc}") from exc
    scheduler_dir = path / "scheduler"
    if scheduler_dir.is_dir():
        noise_scheduler = DDPMScheduler.from_pretrained(str(path), subfolder="scheduler")
    else:
        from charframe.tiny import SD15_SCHEDULER

        noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER)
    tokenizer = _folder_tokenizer(path / "tokenizer")
    info = {"source": "diffusers"} | _file_identity(path, "sd_model")
    return SDComponents(unet, vae, text_encoder, tokenizer, noise_scheduler, info)


def _variant(component: Path) -> str | None:
    """"fp16" when a component folder holds only fp16-variant weights (`*.fp16.safetensors`)."""
    names = [p.name for p in component.glob("*") if p.suffix in (".safetensors", ".bin")]
    plain = [n for n in names if n.count(".") == 1]
    return "fp16" if not plain and any(".fp16." in n for n in names) else None


def _folder_tokenizer(directory: Path) -> Any:
    """The folder's own tokenizer when it has one, else the shipped SD1.x CLIP tokenizer."""
    if (directory / "vocab.json").is_file():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)
    from charframe.tokenizer import clip_tokenizer

    return clip_tokenizer()


def _file_identity(path: Path, role: str) -> dict[str, str]:
    """Name and sd-scripts style hashes of a model (`role` "sd_model") or VAE (`role` "vae") file."""
    from charframe.checkpoint import model_file_hashes

    prefix = "ss_sd_model" if role == "sd_model" else "ss_vae"
    legacy, sha = model_file_hashes(path)
    out = {f"{prefix}_name": path.name, f"{prefix}_hash": legacy, f"ss_new_{prefix.removeprefix('ss_')}_hash": sha}
    if role == "sd_model":
        out["model_name"] = path.name
        out["model_path"] = str(path)
    else:
        out["vae_path"] = str(path)
    return out
