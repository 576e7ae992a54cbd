"""Loading a Stable Diffusion model of any family (SD1.x, SDXL) into `SDComponents`.

`SDComponents` is what loading produces and what training and generation consume. `load_sd` accepts
what users of sd-scripts / WebUI / ComfyUI have on disk: a single-file checkpoint, a diffusers folder,
or nothing (the tiny random demo model of the family), plus an optional separate VAE (`sdxl_vae.safetensors`,
the fp16-fix VAE). Loading never reaches the network: what a single file lacks (component configs, the CLIP
tokenizers) ships in `charframe/data/`. The family comes from the file; a caller's `family` (a character
file's) must agree with it, and picks the tiny demo model's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from charframe.deps import place, quiet_dependency_notes
from charframe.errors import CharframeError
from charframe.families.family import Family, get_family
from charframe.models.checkpoint import file_identity
from charframe.models.components import SDComponents
from charframe.models.detect import check_diffusers_folder
from charframe.models.single_file import family_config, load_single_file, prediction_overrides
from charframe.models.tiny import build_tiny_sd, build_tiny_sdxl
from charframe.models.tokenizer import folder_tokenizer
from charframe.models.vae import load_vae
from charframe.util.once import first_time

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


DEMO_WARNING = (
    "no base model set: using charframe's tiny RANDOM demo model (it makes noise, not pictures). For real pictures "
    "set `model` under [generation] in the character file to a model of a family charframe knows (SD1.x, SDXL) (a .safetensors/.ckpt file or a "
    "diffusers folder, e.g. LoRAInput/v1-5-pruned-emaonly.safetensors); train and generate also take it as their "
    "model option. (Said once per run.)"
)
#: the tiny demo model of each family
TINY_BUILDERS = {"sd15": build_tiny_sd, "sdxl": build_tiny_sdxl}


def load_sd(
    model: PathLike | None = None,
    vae: PathLike | None = None,
    *,
    config: PathLike | None = None,
    dtype: Any = None,
    device: Any = "cpu",
    family: str | Family | None = None,
    prediction: str | None = None,
) -> SDComponents:
    """Load a model (single file, diffusers folder, or None = tiny demo) and an optional VAE.

    `config` is only for single files whose shapes are not SD1.5's: a diffusers folder (its component
    `config.json`s and tokenizer; weights there are ignored) or the original LDM `.yaml`; a `<name>.yaml`
    beside the checkpoint is picked up by itself. `vae`: a VAE file (LDM or diffusers layout, as
    `.safetensors`/`.ckpt`) or a diffusers (vae) folder. `dtype` defaults to float32; modules are
    returned in eval mode on `device`. Unsupported architectures (SD2, inpainting, the SDXL refiner, SD3,
    Flux, a LoRA, ...) raise `CharframeError` before anything is built; `.ckpt` files are only read with
    torch's weights-only unpickler. `family` ("sd15", "sdxl", an alias, or None) must match the model's
    (and picks the tiny model's); `prediction` ("epsilon", "v_prediction") overrides what the model says.

    `info` always has `base_model_version` ("sd_v1", "sdxl_base_v1-0"), `prediction_type`, `source` ("tiny", "diffusers",
    "single_file") and `model_name`; for real models also sd-scripts' `ss_sd_model_name`,
    `ss_sd_model_hash` (WebUI legacy hash), `ss_new_sd_model_hash` (sha256), and with a VAE `ss_vae_name`,
    `ss_vae_hash`, `ss_new_vae_hash` (folders give sd-scripts' "IsADirectory").
    """
    import torch

    quiet_dependency_notes()
    dtype = torch.float32 if dtype is None else dtype
    if model is None:
        log.log(logging.WARNING if first_time("demo model") else logging.DEBUG, DEMO_WARNING)
        comps = TINY_BUILDERS[get_family(family).id](seed=0)
        comps.info.update({"source": "tiny", "model_name": comps.info["name"]})
        if prediction is not None:
            comps.noise_scheduler = type(comps.noise_scheduler).from_config(
                {**comps.noise_scheduler.config, **prediction_overrides(get_family(family), (), prediction)})
    else:
        path = Path(model).expanduser()
        if not path.exists():
            raise CharframeError(f"{path}: model not found (pass a .safetensors/.ckpt file or a diffusers folder)")
        if path.is_dir():
            if config is not None:
                log.warning("config %s ignored: %s is a diffusers folder with its own configs", config, path)
            comps = _load_diffusers_folder(path, dtype, family, prediction)
        else:
            comps = load_single_file(path, config=config, dtype=dtype, family=family, prediction=prediction)
    if vae is not None:
        vae_path = Path(vae).expanduser()
        comps.vae = load_vae(vae_path, like=comps.vae, dtype=dtype)
        comps.info.update(file_identity(vae_path, "vae"))
    elif comps.vae.device.type == "meta":
        raise CharframeError(
            f"{comps.info.get('model_path', model)}: the checkpoint has no VAE weights (first_stage_model.*); "
            f"pass one with {{param}} (e.g. {get_family(comps.family).data.get('vae_example', 'a .safetensors VAE')})", param="vae"
        )
    fam = get_family(comps.family)
    comps.info.setdefault("base_model_version", fam.base_model_version)
    comps.info.setdefault("family", fam.id)
    comps.info.setdefault("prediction_type", comps.noise_scheduler.config.prediction_type)
    comps.info.setdefault("zero_terminal_snr", bool(comps.noise_scheduler.config.get("rescale_betas_zero_snr", False)))
    for m in comps.modules():
        place(m, device, dtype).eval()
    return comps


def _load_diffusers_folder(path: Path, dtype: Any, family: str | Family | None, prediction: str | None) -> SDComponents:
    """A diffusers folder of any family (model_index.json + unet/vae/text_encoder[_2]/tokenizer[_2]/scheduler)."""
    import transformers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    fam = check_diffusers_folder(path)
    if family is not None and get_family(family).id != fam.id:
        raise CharframeError(f"{path}: is an {fam.name} model folder but {{param}} says {get_family(family).name}; "
                             f"give an {get_family(family).name} model or set the family to {fam.id}", param="family")
    missing = [c for c in ("vae", *(te.component for te in fam.text_encoders)) if not (path / c / "config.json").is_file()]
    if missing:
        raise CharframeError(f"{path}: {fam.name} diffusers folder without {missing[0]}/ (config.json); "
                             "pass the complete folder or a single-file checkpoint")
    kw = dict(local_files_only=True, torch_dtype=dtype, variant=_variant(path / "unet"))
    encoders = {}
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path), subfolder="unet", **kw)
        kw["variant"] = _variant(path / "vae")
        vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", **kw)
        for te in fam.text_encoders:
            kw["variant"] = _variant(path / te.component)
            encoders[te.component] = getattr(transformers, te.cls).from_pretrained(str(path), subfolder=te.component, **kw)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CharframeError(f"{path}: cannot load this diffusers folder: {exc}") from exc
    scheduler_dir = path / "scheduler"
    schedule = (dict(DDPMScheduler.load_config(str(path), subfolder="scheduler")) if scheduler_dir.is_dir()
                else family_config(fam).scheduler)
    noise_scheduler = DDPMScheduler.from_config({**schedule, **prediction_overrides(fam, (), prediction)})
    tokenizers = {te.component: folder_tokenizer(path / te.tokenizer, te.pad_token) for te in fam.text_encoders}
    info = {"source": "diffusers"} | file_identity(path, "sd_model")
    first, *rest = fam.text_encoders
    extra = {te.component: encoders[te.component] for te in rest} | {te.tokenizer: tokenizers[te.component] for te in rest}
    return SDComponents(unet, vae, encoders[first.component], tokenizers[first.component], noise_scheduler, info,
                        family=fam.id, **extra)


def _variant(component: Path) -> str | None:
    """"fp16" when a component folder holds only fp16-variant weights (`*.fp16.safetensors`)."""
    names = [p.name for p in component.glob("*") if p.suffix in (".safetensors", ".bin")]
    plain = [n for n in names if n.count(".") == 1]
    return "fp16" if not plain and any(".fp16." in n for n in names) else None


