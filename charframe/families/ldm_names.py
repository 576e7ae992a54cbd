"""diffusers UNet names → the original (LDM/CompVis) layout's, for every UNet2DConditionModel family.

Two things need it: single-file writers (tests write community-layout checkpoints, `charframe.testing.ldm_layout`)
and the kohya key contract of families whose trainer names UNet layers the original way (sd-scripts trains SDXL
on its own `sdxl_original_unet.py`: `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`). Pure string
renaming: input block = 1 + level·(layers+1) + layer, the downsampler closes a level, an up block's upsampler sits
after its attention when it has one.
"""

from __future__ import annotations

# ResNet parts: diffusers name → LDM name.
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's pooled-text + time-id embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def rename_part(rest: str, table: dict[str, str]) -> str:
    """`rest` with its first component renamed by `table` (`conv1.weight` → `in_layers.2.weight`)."""
    for new, old in table.items():
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_key_to_ldm(key: str, layers_per_block: int, attention_up_blocks: frozenset[int] = frozenset()) -> str:
    """One diffusers UNet2DConditionModel key → its LDM name (without the `model.diffusion_model.` prefix).

    An up block's upsampler sits after its attention in LDM, so its slot depends on whether that
    block has attentions (`attention_up_blocks`)."""
    module, leaf = key.rsplit(".", 1)
    for new, old in UNET_FIXED.items():
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
        inner = rename_part(rest, UNET_RESNET) if kind == "resnets" else rest
        return f"middle_block.{slot}.{inner}.{leaf}"
    else:
        raise KeyError(f"unexpected UNet key {key!r}")
    block = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
    if kind == "resnets":
        return f"{block}.{index}.0.{rename_part(rest, UNET_RESNET)}.{leaf}"
    return f"{block}.{index}.1.{rest}.{leaf}"


def unet_module_to_ldm(path: str, layers_per_block: int, attention_up_blocks: frozenset[int] = frozenset()) -> str:
    """A diffusers UNet module path (no parameter name) → its LDM path: `down_blocks.0.downsamplers.0.conv` →
    `input_blocks.3.0.op`, `up_blocks.1.resnets.0.conv1` → `output_blocks.3.0.in_layers.2`."""
    key = unet_key_to_ldm(path + ".weight", layers_per_block, attention_up_blocks)
    return key.removesuffix(".weight")
