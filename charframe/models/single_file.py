"""Single-file checkpoints (the `.safetensors`/`.ckpt` files WebUI and ComfyUI use) → SDComponents, for every
model family (SD1.x; SDXL with its two text encoders, `conditioner.embedders.0/1`).

Order of work, so that bad input fails fast and cheaply: read key names and shapes only, detect the
family (`charframe.models.detect`), pick the component configs, build the modules without
weights (meta device), convert the key *names* with diffusers' own converters and compare every shape
— only then read the tensors. Nothing here touches the network.

Component configs, in order of precedence:
1. `config=` a diffusers folder (its `unet/ vae/ text_encoder[_2]/ scheduler/` configs and `tokenizer[_2]/`;
   components it lacks come from the family's shipped ones), or an original LDM `.yaml` (`v1-inference.yaml` style);
2. a `.yaml` with the checkpoint's name beside it (`model.safetensors` + `model.yaml`, as in WebUI);
3. the family's shipped configs (`charframe/data/models/sd15/`, `.../sdxl/`) — right for nearly every file.

A file that marks itself v-prediction (NoobAI-XL's `v_pred` key; `ztsnr` for zero terminal SNR) gets a
v-prediction schedule; a caller's `prediction` (the character file's) overrides both.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from charframe.errors import CharframeError
from charframe.families.family import Family, TextEncoder, get_family, is_v_prediction
from charframe.models.checkpoint import file_identity, shapes_and_reader
from charframe.models.components import SDComponents
from charframe.models.detect import check_single_file
from charframe.models.tokenizer import folder_tokenizer

log = logging.getLogger(__name__)

SD15_CONFIG = "data/models/sd15"
CONFIG_HINT = "pass {param} with the model's diffusers folder or its original .yaml"
PREDICTIONS = ("epsilon", "v_prediction")


@dataclass
class ModelConfig:
    """Component configs for building a model of one family from a single file. `text_encoder` is the first
    encoder's config; `encoders` has every encoder's by component (`text_encoder`, `text_encoder_2`)."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    source: str = "SD1.5 (built in)"
    tokenizer_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    family: str = "sd15"
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokenizer_dirs: dict[str, Path] = field(default_factory=dict)

    def encoder_config(self, te: TextEncoder) -> dict[str, Any]:
        return self.encoders.get(te.component, self.text_encoder)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{path}: unreadable config ({exc})") from exc


def family_config(family: str | Family | None = None) -> ModelConfig:
    """The shipped component configs of a family (`charframe/data/<config_dir>/`)."""
    fam = get_family(family)
    root = resources.files("charframe").joinpath("data", fam.config_dir)

    def read(rel: str) -> dict[str, Any]:
        return json.loads(root.joinpath(rel).read_text("utf-8"))

    encoders = {te.component: read(f"{te.component}/config.json") for te in fam.text_encoders}
    return ModelConfig(
        unet=read("unet/config.json"),
        vae=read("vae/config.json"),
        text_encoder=encoders[fam.text_encoders[0].component],
        scheduler=read("scheduler/scheduler_config.json"),
        source=f"{fam.data.get('config_name', fam.name)} (built in)",
        family=fam.id,
        encoders=encoders,
    )


def sd15_config() -> ModelConfig:
    """The shipped SD1.5 component configs."""
    return family_config("sd15")


def folder_config(folder: Path, family: str | Family | None = None) -> ModelConfig:
    """Configs from a diffusers folder; missing components fall back to the family's shipped ones."""
    fam = get_family(family)
    cfg = family_config(fam)
    cfg.source = str(folder)
    found = 0
    for attr, rel in (("unet", "unet/config.json"), ("vae", "vae/config.json"), ("scheduler", "scheduler/scheduler_config.json")):
        if (folder / rel).is_file():
            setattr(cfg, attr, _json(folder / rel))
            found += 1
    for te in fam.text_encoders:
        if (folder / te.component / "config.json").is_file():
            cfg.encoders[te.component] = _json(folder / te.component / "config.json")
            found += 1
        if (folder / te.tokenizer / "vocab.json").is_file():
            cfg.tokenizer_dirs[te.component] = folder / te.tokenizer
    if not found:
        raise CharframeError(f"{folder}: no unet/, vae/, text_encoder/ or scheduler/ config.json inside; {CONFIG_HINT}", param="config")
    cfg.text_encoder = cfg.encoder_config(fam.text_encoders[0])
    cfg.tokenizer_dir = cfg.tokenizer_dirs.get(fam.text_encoders[0].component)
    return cfg


def yaml_config(path: Path, shapes: dict[str, tuple[int, ...]], family: str | Family | None = None) -> ModelConfig:
    """Configs from an original LDM yaml (UNet, VAE and noise schedule; the text encoders stay the family's)."""
    import torch
    import yaml
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    try:
        original = yaml.safe_load(path.read_text(encoding="utf-8"))
        params = original["model"]["params"]
        meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        unet = create_unet_diffusers_config_from_ldm(original, meta)
        vae = create_vae_diffusers_config_from_ldm(original, meta)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise CharframeError(f"{path}: not an original Stable Diffusion config yaml ({type(exc).__name__}: {exc})") from exc
    cfg = family_config(family)
    cfg.unet, cfg.vae, cfg.source = unet, vae, str(path)
    cfg.scheduler = dict(
        cfg.scheduler,
        num_train_timesteps=int(params.get("timesteps", 1000)),
        beta_start=float(params.get("linear_start", 0.00085)),
        beta_end=float(params.get("linear_end", 0.012)),
        prediction_type="v_prediction" if params.get("parameterization") == "v" else "epsilon",
    )
    return cfg


def resolve_config(path: Path, config: str | Path | None, shapes: dict[str, tuple[int, ...]],
                   family: str | Family | None = None) -> ModelConfig:
    """The configs to build `path` (a file of `family`) with (see the module docstring for the order)."""
    if config is None:
        beside = next((p for p in (path.with_suffix(".yaml"), path.with_suffix(".yml")) if p.is_file()), None)
        if beside is None:
            return family_config(family)
        log.info("using %s (found beside the checkpoint) for its configuration", beside.name)
        return yaml_config(beside, shapes, family)
    config = Path(config).expanduser()
    if config.is_dir():
        return folder_config(config, family)
    if config.suffix.lower() in (".yaml", ".yml") and config.is_file():
        return yaml_config(config, shapes, family)
    raise CharframeError(f"{config}: {{param}} must be a diffusers folder or an original .yaml file", param="config")


def build_text_encoder(te: TextEncoder, config: dict[str, Any]) -> Any:
    """A transformers text encoder of the family's class (`CLIPTextModel`, `CLIPTextModelWithProjection`)."""
    import transformers
    from transformers import CLIPTextConfig

    return getattr(transformers, te.cls)(CLIPTextConfig.from_dict(config))


def empty_encoders(cfg: ModelConfig) -> dict[str, Any]:
    """Every text encoder of the config's family, on the meta device, by component."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return {te.component: build_text_encoder(te, cfg.encoder_config(te)) for te in get_family(cfg.family).text_encoders}


def empty_modules(cfg: ModelConfig) -> tuple[Any, Any, Any]:
    """UNet, VAE and (first) CLIP text encoder with parameters on the meta device (no memory, no init cost)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(cfg.unet)
        vae = AutoencoderKL.from_config(cfg.vae)
    te = get_family(cfg.family).text_encoders[0]
    return unet, vae, empty_encoders(cfg)[te.component]


def convert_unet(state: dict[str, Any], unet: Any) -> dict[str, Any]:
    """The UNet part of an LDM single-file state as a diffusers state dict."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # its EMA notice talks about a flag charframe does not have
    try:
        return convert_ldm_unet_checkpoint(state, dict(unet.config))
    finally:
        dlogging.set_verbosity(level)


def convert_vae(state: dict[str, Any], vae: Any) -> dict[str, Any]:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae_part = {k: v for k, v in state.items() if k.startswith("first_stage_model.")}
    return convert_ldm_vae_checkpoint(vae_part, dict(vae.config)) if vae_part else {}


def convert_text_encoder(state: dict[str, Any], te: TextEncoder, module: Any) -> dict[str, Any]:
    """One text encoder's part of a single-file state (under `te.ldm_prefix`) in transformers' names."""
    if te.ldm_layout == "open_clip":
        from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

        part = {k: v for k, v in state.items() if k.startswith(te.ldm_prefix)}
        return text_encoder_state(convert_open_clip_checkpoint(module, part, prefix=te.ldm_prefix), module)
    part = {k[len(te.ldm_prefix):]: v for k, v in state.items() if k.startswith(te.ldm_prefix)}
    return text_encoder_state(part, module)


def convert(state: dict[str, Any], unet: Any, vae: Any, text_encoder: Any) -> tuple[dict, dict, dict]:
    """SD1.x LDM single-file state → (unet, vae, text encoder) diffusers/transformers state dicts."""
    te = get_family("sd15").text_encoders[0]
    return convert_unet(state, unet), convert_vae(state, vae), convert_text_encoder(state, te, text_encoder)


def text_encoder_state(state: dict[str, Any], text_encoder: Any) -> dict[str, Any]:
    """Match transformers' CLIP naming: recent releases have no `text_model.` level, older ones do (and
    `CLIPTextModelWithProjection` keeps it, beside its top-level `text_projection`)."""
    wrapped = hasattr(text_encoder, "text_model")
    out = {}
    for k, v in state.items():
        k = k.removeprefix("text_model.")
        out["text_model." + k if wrapped and not k.startswith("text_projection.") else k] = v
    return out


def check_shapes(
    path: Path, module: Any, state: dict[str, Any], what: str, source: str, hint: str = CONFIG_HINT
) -> None:
    """Every parameter of `module` present in `state` with the same shape, or a clear error.

    Shapes are compared first: a model of another size misses keys too, and "shapes differ" is the
    message that leads to the fix."""
    expected = module.state_dict()
    for k, ref in expected.items():
        if k in state and tuple(state[k].shape) != tuple(ref.shape):
            raise CharframeError(
                f"{path}: {what} shapes differ from {source} ({k}: file {tuple(state[k].shape)}, "
                f"config {tuple(ref.shape)}); {hint}", param="config" if "{param}" in hint else None
            )
    missing = [k for k in expected if k not in state]
    if missing:
        raise CharframeError(
            f"{path}: {what} weights incomplete ({len(missing)} missing, e.g. {missing[0]}); the file may be "
            f"truncated, or its layout is not {source}'s ({hint})", param="config" if "{param}" in hint else None
        )


def assign(module: Any, state: dict[str, Any], dtype: Any) -> Any:
    """Put loaded tensors into a meta-initialised module.

    Each tensor is copied into its own allocation: safetensors hands out views into the memory-mapped
    file at arbitrary offsets, and unaligned weights both keep the file mapped and take different
    (slower, numerically different) kernel paths than a normally loaded model."""
    import torch

    expected = module.state_dict()
    module.load_state_dict(
        {k: state[k].to(dtype=dtype, copy=True, memory_format=torch.contiguous_format) for k in expected},
        strict=True,
        assign=True,
    )
    return module.eval()


def load_single_file(path: Path, *, config: str | Path | None = None, dtype: Any = None,
                     family: str | Family | None = None, prediction: str | None = None) -> Any:
    """A single-file checkpoint of any family as `SDComponents` (see the module docstring).

    `family` (a character file's choice) must agree with the file; `prediction` ("epsilon" or
    "v_prediction") overrides what the file and its config say."""
    import torch
    from diffusers import DDPMScheduler

    dtype = dtype or torch.float32
    shapes, read = shapes_and_reader(path)
    fam = get_family(check_single_file(path, shapes, family).family)
    if sum(k.startswith("model_ema.") for k in shapes) > 100:
        log.info("%s also holds EMA weights; training starts from the regular (non-EMA) UNet, as sd-scripts does", path.name)
    cfg = resolve_config(path, config, shapes, fam)
    unet, vae, _ = empty_modules(cfg)
    encoders = empty_encoders(cfg)
    has_vae = any(k.startswith("first_stage_model.") for k in shapes)
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    checks = [(unet, convert_unet(meta, unet), "UNet")]
    if has_vae:
        checks.append((vae, convert_vae(meta, vae), "VAE"))
    for te in fam.text_encoders:
        module = encoders[te.component]
        what = "text encoder" if len(fam.text_encoders) == 1 else f"{te.describe} ({te.component})"
        checks.append((module, convert_text_encoder(meta, te, module), what))
    for module, state, what in checks:
        check_shapes(path, module, state, what, cfg.source)

    state = read()
    assign(unet, convert_unet(state, unet), dtype)
    for te in fam.text_encoders:
        assign(encoders[te.component], convert_text_encoder(state, te, encoders[te.component]), dtype)
    if has_vae:
        assign(vae, convert_vae(state, vae), dtype)
    # without VAE weights `vae` stays on the meta device: load_sd then requires --vae
    tokenizers = {}
    for te in fam.text_encoders:
        tokenizer = folder_tokenizer(cfg.tokenizer_dirs.get(te.component), te.pad_token)
        if len(tokenizer) > encoders[te.component].config.vocab_size:
            raise CharframeError(
                f"{path}: the tokenizer ({len(tokenizer)} tokens) does not fit the text encoder "
                f"({encoders[te.component].config.vocab_size} embeddings); {CONFIG_HINT}", param="config"
            )
        tokenizers[te.component] = tokenizer
    scheduler_config = dict(cfg.scheduler)
    marked = is_v_prediction(fam, shapes)
    if marked:
        scheduler_config["prediction_type"] = "v_prediction"
        log.info("%s marks itself v-prediction (%s)", path.name, ", ".join(k for k in shapes if k in fam.v_pred_keys + fam.ztsnr_keys))
    scheduler_config |= prediction_overrides(fam, shapes, prediction)
    scheduler = DDPMScheduler.from_config(scheduler_config)
    if scheduler.config.prediction_type != "epsilon" and not marked and prediction is None and not fam.v_pred_keys:
        log.warning(
            "%s: its config (%s) says %s; SD1.x models are normally epsilon-prediction and charframe's "
            "trainer trains epsilon prediction",
            path.name, cfg.source, scheduler.config.prediction_type,
        )
    info = {"source": "single_file", "config_source": cfg.source, "vae_in_checkpoint": has_vae,
            "zero_terminal_snr": bool(scheduler.config.get("rescale_betas_zero_snr", False))}
    info |= file_identity(path, "sd_model")
    first, *rest = fam.text_encoders
    extra = {f"{te.component}": encoders[te.component] for te in rest} | {te.tokenizer: tokenizers[te.component] for te in rest}
    return SDComponents(unet, vae, encoders[first.component], tokenizers[first.component], scheduler, info,
                        family=fam.id, **extra)


def prediction_overrides(fam: Family, keys: Any, prediction: str | None) -> dict[str, Any]:
    """Scheduler config changes: zero terminal SNR when the file says so (NoobAI's `ztsnr`), and the caller's
    `prediction`, which wins over the file (epsilon also turns zero terminal SNR off)."""
    out: dict[str, Any] = {}
    if any(k in fam.ztsnr_keys for k in keys):
        out["rescale_betas_zero_snr"] = True
    if prediction is not None:
        if prediction not in PREDICTIONS:
            raise CharframeError(f"{{param}} must be one of {', '.join(PREDICTIONS)}, got {prediction!r}", param="prediction")
        out["prediction_type"] = prediction
        if prediction == "epsilon":
            out["rescale_betas_zero_snr"] = False
    return out
