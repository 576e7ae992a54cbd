"""diffusers → original single-file (LDM/CompVis) key names, the layout WebUI, ComfyUI and sd-scripts read:
SD1.x (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`) and SDXL (the same
UNet and VAE names, CLIP-L under `conditioner.embedders.0.transformer.*`, OpenCLIP-G under
`conditioner.embedders.1.model.*` in open_clip's own names: fused q/k/v `in_proj_weight`, `ln_1`, `mlp.c_fc`,
a transposed `text_projection`).

Loading goes the other way through diffusers' own converters (`charframe.models.single_file`); this module
exists so tests can write a tiny checkpoint in the real community layout, and so a round trip
(`to_ldm` then diffusers' conversion) can be checked key for key. Pure key renaming, plus the 1x1-conv
shape the LDM VAE uses for its attention projections.
"""

from __future__ import annotations

from typing import Any

from charframe.families.ldm_names import rename_part, unet_key_to_ldm

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state: dict[str, Any], layers_per_block: int) -> dict[str, Any]:
    """A diffusers UNet state dict in LDM layout (with the `model.diffusion_model.` prefix)."""
    with_attention = frozenset(int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k)
    return {UNET_PREFIX + unet_key_to_ldm(k, layers_per_block, with_attention): v for k, v in state.items()}


def vae_key_to_ldm(key: str, num_levels: int) -> str:
    """One diffusers AutoencoderKL key → its LDM name (without `first_stage_model.`)."""
    module, leaf = key.rsplit(".", 1)
    parts = module.split(".")
    side = parts[0]
    if side in ("quant_conv", "post_quant_conv"):
        return key
    rest = ".".join(parts[1:])
    if rest == "conv_norm_out":
        return f"{side}.norm_out.{leaf}"
    if parts[1] in ("down_blocks", "up_blocks"):
        level = int(parts[2]) if side == "encoder" else num_levels - 1 - int(parts[2])
        group = "down" if side == "encoder" else "up"
        if parts[3] in ("downsamplers", "upsamplers"):
            tail = ".".join(parts[5:])
            return f"{side}.{group}.{level}.{'downsample' if side == 'encoder' else 'upsample'}.{tail}.{leaf}"
        inner = rename_part(".".join(parts[5:]), _VAE_RESNET)
        return f"{side}.{group}.{level}.block.{parts[4]}.{inner}.{leaf}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            inner = rename_part(".".join(parts[4:]), _VAE_RESNET)
            return f"{side}.mid.block_{int(parts[3]) + 1}.{inner}.{leaf}"
        inner = rename_part(".".join(parts[4:]), _VAE_ATTENTION)
        return f"{side}.mid.attn_1.{inner}.{leaf}"
    return key  # conv_in / conv_out keep their names


def vae_to_ldm(state: dict[str, Any], num_levels: int, prefix: str = VAE_PREFIX) -> dict[str, Any]:
    """A diffusers VAE state dict in LDM layout; attention projections become 1x1 convs."""
    out = {}
    for key, value in state.items():
        ldm = vae_key_to_ldm(key, num_levels)
        if ".mid.attn_1." in ldm and ldm.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            value = value.reshape(*value.shape, 1, 1)
        out[prefix + ldm] = value
    return out


def text_encoder_to_ldm(state: dict[str, Any], prefix: str = CLIP_PREFIX) -> dict[str, Any]:
    """CLIPTextModel keys (with or without transformers' `text_model.` level) under `cond_stage_model`."""
    return {prefix + k.removeprefix("text_model."): v for k, v in state.items()}


_OPEN_CLIP_PARTS = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_OPEN_CLIP_FIXED = {"embeddings.token_embedding.weight": "token_embedding.weight",
                    "embeddings.position_embedding.weight": "positional_embedding",
                    "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def open_clip_to_ldm(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A transformers CLIPTextModelWithProjection state dict in open_clip's layout under `prefix`
    (`conditioner.embedders.1.model.` for SDXL): q/k/v fused, `text_projection` as open_clip's (width × proj)."""
    import torch

    out: dict[str, Any] = {}
    qkv: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key in _OPEN_CLIP_FIXED:
            out[prefix + _OPEN_CLIP_FIXED[key]] = value
        elif key.startswith("encoder.layers."):
            _, _, layer, rest = key.split(".", 3)
            base = f"{prefix}transformer.resblocks.{layer}."
            module, leaf = rest.rsplit(".", 1)
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{base}attn.in_proj_{leaf}", {})[module[-6]] = value
            else:
                out[base + _OPEN_CLIP_PARTS[module] + "." + leaf] = value
        elif key != "embeddings.position_ids":
            raise KeyError(f"unexpected text encoder key {key!r}")
    for name, parts in qkv.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    out[prefix + "logit_scale"] = torch.tensor(4.6052)  # open_clip's ln(100); loaders ignore it
    return out


SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."


def to_sdxl_checkpoint(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, Any]:
    """The four SDXL modules as one single-file state dict in the original layout (UNet and VAE as SD1.x's)."""
    state = unet_to_ldm(unet.state_dict(), unet.config.layers_per_block)
    state |= vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    state |= text_encoder_to_ldm(text_encoder.state_dict(), SDXL_CLIP_L_PREFIX)
    state |= open_clip_to_ldm(text_encoder_2.state_dict(), SDXL_CLIP_G_PREFIX)
    return state


def to_ldm_checkpoint(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """The three SD1.x modules as one single-file state dict (tensors shared, not copied)."""
    state = unet_to_ldm(unet.state_dict(), unet.config.layers_per_block)
    state |= vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    state |= text_encoder_to_ldm(text_encoder.state_dict())
    return state
