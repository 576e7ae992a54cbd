"""The kohya name contract: how a layer becomes a LoRA key, and what a key says about its layer.

Both sides use it: the trainer names the modules it creates (`kohya_name`), the file tools read
those names back (`split_key`, `MODULE_NAME`, `block_of`, `layer_shape`). A key reads
`<module>.<suffix>`; the module is the layer's dotted path under the UNet (`lora_unet_…`) or the
text encoder (`lora_te_…`, `lora_te1_…` for SDXL's first one) with every dot turned into `_`.

Blocks follow the original LDM UNet numbering the WebUI block-weight tools use: diffusers
`down_blocks.i` resnets/attentions j are input block 3i+j+1 and its downsampler is 3i+3; the mid
block is M00; `up_blocks.i` resnets/attentions j are output block 3i+j and its upsampler 3i+2;
the text encoder is BASE. Old LDM-style names (`lora_unet_input_blocks_4_1_…`) map directly.
conv_in, time_embedding and conv_out belong to no block.
"""

from __future__ import annotations

import re
from typing import Sequence

UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"
#: A module name any supported file may hold (UNet or one of the text encoders).
MODULE_NAME = re.compile(r"^lora_(unet|te\d?)_\w+$")


def kohya_name(prefix: str, module_path: str) -> str:
    """`lora_unet` + `down_blocks.0.attentions.0.proj_in` → `lora_unet_down_blocks_0_attentions_0_proj_in`."""
    return f"{prefix}.{module_path}".replace(".", "_")


def split_key(key: str) -> tuple[str, str]:
    """`<module>.<suffix>` → (module, suffix); the suffix may hold dots (`lora_down.weight`)."""
    name, _, suffix = key.partition(".")
    return name, suffix


def is_text_encoder(module_name: str) -> bool:
    return module_name.startswith(TE_PREFIX)


_BLOCK_RULES: tuple[tuple[re.Pattern[str], object], ...] = (
    (re.compile(r"^lora_te\d*_"), lambda m: "BASE"),
    (re.compile(r"^lora_unet_down_blocks_(\d+)_(?:attentions|resnets)_(\d+)_"), lambda m: ("IN", 3 * m[1] + m[2] + 1)),
    (re.compile(r"^lora_unet_down_blocks_(\d+)_downsamplers_\d+_"), lambda m: ("IN", 3 * m[1] + 3)),
    (re.compile(r"^lora_unet_mid_block_"), lambda m: "M00"),
    (re.compile(r"^lora_unet_up_blocks_(\d+)_(?:attentions|resnets)_(\d+)_"), lambda m: ("OUT", 3 * m[1] + m[2])),
    (re.compile(r"^lora_unet_up_blocks_(\d+)_upsamplers_\d+_"), lambda m: ("OUT", 3 * m[1] + 2)),
    (re.compile(r"^lora_unet_input_blocks_(\d+)_"), lambda m: ("IN", m[1])),
    (re.compile(r"^lora_unet_middle_block_"), lambda m: "M00"),
    (re.compile(r"^lora_unet_output_blocks_(\d+)_"), lambda m: ("OUT", m[1])),
)


def block_of(module_name: str) -> str | None:
    """The 26-block id (BASE, IN00…IN11, M00, OUT00…OUT11) of a module name; None outside every block."""
    for pattern, rule in _BLOCK_RULES:
        match = pattern.match(module_name)
        if match:
            found = rule([None, *map(int, match.groups())])
            if isinstance(found, str):
                return found
            prefix, index = found
            return f"{prefix}{index:02d}" if index < 12 else None
    return None


_CONV3 = re.compile(r"^lora_unet_(conv_in|conv_out|.*(_conv[12]?|_op|_in_layers_2|_out_layers_3))$")
#: SD1.x's 1x1 convs; a family's own list (`[lora] conv1x1` of its data file) replaces it
SD1_CONV1X1 = ("proj_in", "proj_out", "conv_shortcut", "skip_connection")


def layer_shape(module_name: str, flat: Sequence[int], conv1x1: Sequence[str] | None = None) -> tuple[int, ...]:
    """The layer weight shape of a flat out × (in·k·k) ΔW, from the module name.

    Needed only where a file stores a conv update flattened (LyCORIS LoHa without Tucker cores):
    resnet conv1/conv2, down/upsampler convs and conv_in/out are 3x3; the layers named in `conv1x1`
    (SD1.x: proj_in/out and conv_shortcut; SDXL's proj_in/out are linear) are 1x1 convs; everything
    else is a linear layer.
    """
    if len(flat) != 2:
        return tuple(flat)
    out, inner = flat
    if _CONV3.search(module_name) and inner % 9 == 0:
        return (out, inner // 9, 3, 3)
    if module_name.startswith("lora_unet_") and module_name.endswith(tuple("_" + n for n in (conv1x1 or SD1_CONV1X1))):
        return (out, inner, 1, 1)
    return (out, inner)
