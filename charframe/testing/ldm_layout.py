"""diffusers → original single-file (LDM/CompVis) key names for SD1.x, the layout WebUI, ComfyUI and
sd-scripts read (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`).

Loading goes the other way through diffusers' own converters (`charframe.models.single_file`); this module
exists so tests can write a tiny checkpoint in the real community layout, and so a round trip
(`to_ldm` then diffusers' conversion) can be checked key for key. Pure key renaming, plus the 1x1-conv
shape the LDM VAE uses for its attention projections.
"""

from __future__ import annotations

from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# ResNet parts: diffusers name → LDM name, for the UNet and the VAE.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_key_to_ldm(key: str, layers_per_block: int, attention_up_blocks: frozenset[int] = frozenset()) -> str:
    """One diffusers UNet2DConditionModel key → its LDM name (without the `model.diffusion_model.` prefix).

    An up block's upsampler sits after its attention in LDM, so its slot depends on whether that
    block has attentions (`attention_up_blocks`)."""
    module, leaf = key.rsplit(".", 1)
    for new, old in _UNET_FIXED.items():
        if module == new:
            return f"{old}.{leaf}"
    parts = module.split(".")
    per = layers_per_block + 1
    if parts[0] == "down_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "downsamplers":
            return f"input_blocks.{(i + 1) * per}.0.op.{leaf}"
        index = 1 + i * per + j
    elif parts[0] == "up_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "upsamplers":
            slot = 2 if i in attention_up_blocks else 1
            return f"output_blocks.{i * per + layers_per_block}.{slot}.{rest}.{leaf}"
        index = i * per + j
    elif parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        slot = 1 if kind == "attentions" else 2 * j
        inner = _rename_resnet(rest, _UNET_RESNET) if kind == "resnets" else rest
        return f"middle_block.{slot}.{inner}.{leaf}"
    else:
        raise KeyError(f"unexpected UNet key {key!r}")
    block = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
    if kind == "resnets":
        return f"{block}.{index}.0.{_rename_resnet(rest, _UNET_RESNET)}.{leaf}"
    return f"{block}.{index}.1.{rest}.{leaf}"


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
        inner = _rename_resnet(".".join(parts[5:]), _VAE_RESNET)
        return f"{side}.{group}.{level}.block.{parts[4]}.{inner}.{leaf}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            inner = _rename_resnet(".".join(parts[4:]), _VAE_RESNET)
            return f"{side}.mid.block_{int(parts[3]) + 1}.{inner}.{leaf}"
        inner = _rename_resnet(".".join(parts[4:]), _VAE_ATTENTION)
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


def text_encoder_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextModel keys (with or without transformers' `text_model.` level) under `cond_stage_model`."""
    return {CLIP_PREFIX + k.removeprefix("text_model."): v for k, v in state.items()}


def to_ldm_checkpoint(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """The three SD1.x modules as one single-file state dict (tensors shared, not copied)."""
    state = unet_to_ldm(unet.state_dict(), unet.config.layers_per_block)
    state |= vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    state |= text_encoder_to_ldm(text_encoder.state_dict())
    return state
