"""SD1.x single-file checkpoints (the `.safetensors`/`.ckpt` files WebUI and ComfyUI use) → SDComponents.

Order of work, so that bad input fails fast and cheaply: read key names and shapes only, detect the
architecture (`charframe.models.detect`), pick the component configs, build the modules without
weights (meta device), convert the key *names* with diffusers' own converters and compare every shape
— only then read the tensors. Nothing here touches the network.

Component configs, in order of precedence:
1. `config=` a diffusers folder (its `unet/ vae/ text_encoder/ scheduler/` configs and `tokenizer/`;
   components it lacks come from SD1.5), or an original LDM `.yaml` (`v1-inference.yaml` style);
2. a `.yaml` with the checkpoint's name beside it (`model.safetensors` + `model.yaml`, as in WebUI);
3. the shipped SD1.5 configs (`charframe/data/models/sd15/`) — right for nearly every SD1.x file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from charframe.errors import CharframeError
from charframe.models.checkpoint import file_identity, shapes_and_reader
from charframe.models.components import SDComponents
from charframe.models.detect import check_single_file
from charframe.models.tokenizer import folder_tokenizer

log = logging.getLogger(__name__)

SD15_CONFIG = "data/models/sd15"
CONFIG_HINT = "pass {param} with the model's diffusers folder or its original .yaml"


@dataclass
class ModelConfig:
    """Component configs for building an SD1.x model from a single file."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    source: str = "SD1.5 (built in)"
    tokenizer_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{path}: unreadable config ({exc})") from exc


def sd15_config() -> ModelConfig:
    """The shipped SD1.5 component configs."""
    root = resources.files("charframe").joinpath(SD15_CONFIG)

    def read(rel: str) -> dict[str, Any]:
        return json.loads(root.joinpath(rel).read_text("utf-8"))

    return ModelConfig(
        unet=read("unet/config.json"),
        vae=read("vae/config.json"),
        text_encoder=read("text_encoder/config.json"),
        scheduler=read("scheduler/scheduler_config.json"),
    )


def folder_config(folder: Path) -> ModelConfig:
    """Configs from a diffusers folder; missing components fall back to SD1.5."""
    cfg = sd15_config()
    cfg.source = str(folder)
    found = 0
    for attr, rel in (
        ("unet", "unet/config.json"),
        ("vae", "vae/config.json"),
        ("text_encoder", "text_encoder/config.json"),
        ("scheduler", "scheduler/scheduler_config.json"),
    ):
        if (folder / rel).is_file():
            setattr(cfg, attr, _json(folder / rel))
            found += 1
    if not found:
        raise CharframeError(f"{folder}: no unet/, vae/, text_encoder/ or scheduler/ config.json inside; {CONFIG_HINT}", param="config")
    if (folder / "tokenizer" / "vocab.json").is_file():
        cfg.tokenizer_dir = folder / "tokenizer"
    return cfg


def yaml_config(path: Path, shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """Configs from an original LDM yaml (UNet, VAE and noise schedule; the text encoder stays CLIP-L)."""
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
    cfg = sd15_config()
    cfg.unet, cfg.vae, cfg.source = unet, vae, str(path)
    cfg.scheduler = dict(
        cfg.scheduler,
        num_train_timesteps=int(params.get("timesteps", 1000)),
        beta_start=float(params.get("linear_start", 0.00085)),
        beta_end=float(params.get("linear_end", 0.012)),
        prediction_type="v_prediction" if params.get("parameterization") == "v" else "epsilon",
    )
    return cfg


def resolve_config(path: Path, config: str | Path | None, shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """The configs to build `path` with (see the module docstring for the order)."""
    if config is None:
        beside = next((p for p in (path.with_suffix(".yaml"), path.with_suffix(".yml")) if p.is_file()), None)
        if beside is None:
            return sd15_config()
        log.info("using %s (found beside the checkpoint) for its configuration", beside.name)
        return yaml_config(beside, shapes)
    config = Path(config).expanduser()
    if config.is_dir():
        return folder_config(config)
    if config.suffix.lower() in (".yaml", ".yml") and config.is_file():
        return yaml_config(config, shapes)
    raise CharframeError(f"{config}: {{param}} must be a diffusers folder or an original .yaml file", param="config")


def empty_modules(cfg: ModelConfig) -> tuple[Any, Any, Any]:
    """UNet, VAE and CLIP text encoder with parameters on the meta device (no memory, no init cost)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(cfg.unet)
        vae = AutoencoderKL.from_config(cfg.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(cfg.text_encoder))
    return unet, vae, text_encoder


def convert(state: dict[str, Any], unet: Any, vae: Any, text_encoder: Any) -> tuple[dict, dict, dict]:
    """LDM single-file state → (unet, vae, text encoder) diffusers/transformers state dicts."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # its EMA notice talks about a flag charframe does not have
    try:
        unet_sd = convert_ldm_unet_checkpoint(state, dict(unet.config))
    finally:
        dlogging.set_verbosity(level)
    vae_part = {k: v for k, v in state.items() if k.startswith("first_stage_model.")}
    vae_sd = convert_ldm_vae_checkpoint(vae_part, dict(vae.config)) if vae_part else {}
    te_sd = text_encoder_state(convert_ldm_clip_checkpoint(state), text_encoder)
    return unet_sd, vae_sd, te_sd


def text_encoder_state(state: dict[str, Any], text_encoder: Any) -> dict[str, Any]:
    """Match transformers' CLIP naming: recent releases have no `text_model.` level, older ones do."""
    wrapped = hasattr(text_encoder, "text_model")
    out = {}
    for k, v in state.items():
        k = k.removeprefix("text_model.")
        out["text_model." + k if wrapped else k] = v
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


def load_single_file(path: Path, *, config: str | Path | None = None, dtype: Any = None) -> Any:
    """An SD1.x single-file checkpoint as `SDComponents` (see the module docstring)."""
    import torch
    from diffusers import DDPMScheduler


    dtype = dtype or torch.float32
    shapes, read = shapes_and_reader(path)
    check_single_file(path, shapes)
    if sum(k.startswith("model_ema.") for k in shapes) > 100:
        log.info("%s also holds EMA weights; training starts from the regular (non-EMA) UNet, as sd-scripts does", path.name)
    cfg = resolve_config(path, config, shapes)
    unet, vae, text_encoder = empty_modules(cfg)
    has_vae = any(k.startswith("first_stage_model.") for k in shapes)
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    parts = convert(meta, unet, vae, text_encoder)
    modules = (unet, vae, text_encoder) if has_vae else (unet, text_encoder)
    states = parts if has_vae else (parts[0], parts[2])
    for module, state, what in zip(modules, states, ("UNet", "VAE", "text encoder") if has_vae else ("UNet", "text encoder")):
        check_shapes(path, module, state, what, cfg.source)

    unet_sd, vae_sd, te_sd = convert(read(), unet, vae, text_encoder)
    assign(unet, unet_sd, dtype)
    assign(text_encoder, te_sd, dtype)
    if has_vae:
        assign(vae, vae_sd, dtype)
    # without VAE weights `vae` stays on the meta device: load_sd then requires --vae
    tokenizer = folder_tokenizer(cfg.tokenizer_dir)
    if len(tokenizer) > text_encoder.config.vocab_size:
        raise CharframeError(
            f"{path}: the tokenizer ({len(tokenizer)} tokens) does not fit the text encoder "
            f"({text_encoder.config.vocab_size} embeddings); {CONFIG_HINT}", param="config"
        )
    scheduler = DDPMScheduler.from_config(cfg.scheduler)
    if scheduler.config.prediction_type != "epsilon":
        log.warning(
            "%s: its config (%s) says %s; SD1.x models are normally epsilon-prediction and charframe's "
            "trainer trains epsilon prediction",
            path.name, cfg.source, scheduler.config.prediction_type,
        )
    info = {"source": "single_file", "config_source": cfg.source, "vae_in_checkpoint": has_vae}
    info |= file_identity(path, "sd_model")
    return SDComponents(unet, vae, text_encoder, tokenizer, scheduler, info)


