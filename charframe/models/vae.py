"""A separate VAE replacing the checkpoint's own (`--vae`), as WebUI and sd-scripts allow.

Accepted: an LDM-layout file (`kl-f8-anime2.ckpt`, `vae-ft-mse-840000-ema-pruned.safetensors`: keys
`encoder.*`, `decoder.*`, `quant_conv.*`, optionally under `first_stage_model.` — so a full SD1.x
checkpoint lends its VAE too), a diffusers-layout VAE file, or a diffusers VAE folder (or a whole
diffusers model folder, whose `vae/` is used). The VAE keeps the base model's config (scaling factor
included); shapes are checked before any tensor is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from charframe.errors import CharframeError
from charframe.models.checkpoint import shapes_and_reader
from charframe.models.single_file import assign, check_shapes

log = logging.getLogger(__name__)

DIFFUSERS_VAE_KEY = "encoder.down_blocks.0.resnets.0.conv1.weight"


def load_vae(path: Path, *, like: Any, dtype: Any = None) -> Any:
    """An `AutoencoderKL` from `path`, shaped like `like` (the base model's VAE, possibly on meta)."""
    import torch

    dtype = dtype or torch.float32
    if not path.exists():
        raise CharframeError(f"{path}: VAE not found (pass a .safetensors/.ckpt VAE file or a diffusers vae folder)")
    if path.is_dir():
        vae = _load_folder(path, dtype)
    else:
        vae = _load_file(path, like, dtype)
    log.info("VAE: %s", path.name)
    return vae


def _load_folder(path: Path, dtype: Any) -> Any:
    from diffusers import AutoencoderKL

    sub = "vae" if (path / "vae" / "config.json").is_file() else None
    if sub is None and not (path / "config.json").is_file():
        raise CharframeError(f"{path}: not a diffusers VAE folder (no config.json or vae/config.json)")
    try:
        vae = AutoencoderKL.from_pretrained(str(path), subfolder=sub, local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CharframeError(f"{path}: cannot load this VAE folder: {exc}") from exc
    if vae.config.latent_channels != 4:
        raise CharframeError(
            f"{path}: this VAE has {vae.config.latent_channels} latent channels; SD1.x needs 4 "
            "(it belongs to another architecture, e.g. SD3 or Flux)"
        )
    return vae.eval()


def _load_file(path: Path, like: Any, dtype: Any) -> Any:
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint


    with init_empty_weights():
        vae = AutoencoderKL.from_config(like.config)

    def to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
        if DIFFUSERS_VAE_KEY in state:
            return state
        vae_keys = [k for k in state if k.startswith(("first_stage_model.", "vae.", "encoder.", "decoder.", "quant_conv.", "post_quant_conv."))]
        if not vae_keys:
            raise CharframeError(
                f"{path}: no VAE weights found (expected encoder.*/decoder.* keys, as in kl-f8-anime2.ckpt "
                "or vae-ft-mse-840000-ema-pruned.safetensors)"
            )
        return convert_ldm_vae_checkpoint({k: state[k] for k in vae_keys}, dict(vae.config))

    shapes, read = shapes_and_reader(path)
    meta = to_diffusers({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    check_shapes(path, vae, meta, "VAE", "the base model's VAE", "use a VAE made for SD1.x models")
    return assign(vae, to_diffusers(read()), dtype)
