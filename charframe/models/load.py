"""Stable Diffusion 1.x model components as one small bundle, and the loading that produces them.

`SDComponents` is what loading produces and what training and generation consume. `load_sd` accepts
what users of sd-scripts / WebUI / ComfyUI have on disk: a single-file checkpoint, a diffusers folder,
or nothing (the tiny random demo model), plus an optional separate VAE. Loading never reaches the
network: what a single file lacks (component configs, the CLIP tokenizer) ships in `charframe/data/`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from charframe.deps import place, quiet_dependency_notes
from charframe.errors import CharframeError
from charframe.models.checkpoint import file_identity
from charframe.models.components import SDComponents
from charframe.models.detect import check_diffusers_folder
from charframe.models.single_file import load_single_file, sd15_config
from charframe.models.tiny import build_tiny_sd
from charframe.models.tokenizer import folder_tokenizer
from charframe.models.vae import load_vae
from charframe.util.once import first_time

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


DEMO_WARNING = (
    "no base model set: using charframe's tiny RANDOM demo model (it makes noise, not pictures). For real pictures "
    "set `model` under [generation] in the character file to an SD1.x model (a .safetensors/.ckpt file or a "
    "diffusers folder, e.g. LoRAInput/v1-5-pruned-emaonly.safetensors); train and generate also take it as their "
    "model option. (Said once per run.)"
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

    quiet_dependency_notes()
    dtype = torch.float32 if dtype is None else dtype
    if model is None:
        log.log(logging.WARNING if first_time("demo model") else logging.DEBUG, DEMO_WARNING)
        comps = build_tiny_sd(seed=0)
        comps.info.update({"source": "tiny", "model_name": comps.info["name"]})
    else:
        path = Path(model).expanduser()
        if not path.exists():
            raise CharframeError(f"{path}: model not found (pass a .safetensors/.ckpt file or a diffusers folder)")
        if path.is_dir():
            if config is not None:
                log.warning("config %s ignored: %s is a diffusers folder with its own configs", config, path)
            comps = _load_diffusers_folder(path, dtype)
        else:
            comps = load_single_file(path, config=config, dtype=dtype)
    if vae is not None:
        vae_path = Path(vae).expanduser()
        comps.vae = load_vae(vae_path, like=comps.vae, dtype=dtype)
        comps.info.update(file_identity(vae_path, "vae"))
    elif comps.vae.device.type == "meta":
        raise CharframeError(
            f"{comps.info.get('model_path', model)}: the checkpoint has no VAE weights (first_stage_model.*); "
            "pass one with {param} (e.g. vae-ft-mse-840000-ema-pruned.safetensors)", param="vae"
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
        noise_scheduler = DDPMScheduler.from_config(sd15_config().scheduler)
    tokenizer = folder_tokenizer(path / "tokenizer")
    info = {"source": "diffusers"} | file_identity(path, "sd_model")
    return SDComponents(unet, vae, text_encoder, tokenizer, noise_scheduler, info)


def _variant(component: Path) -> str | None:
    """"fp16" when a component folder holds only fp16-variant weights (`*.fp16.safetensors`)."""
    names = [p.name for p in component.glob("*") if p.suffix in (".safetensors", ".bin")]
    plain = [n for n in names if n.count(".") == 1]
    return "fp16" if not plain and any(".fp16." in n for n in names) else None


