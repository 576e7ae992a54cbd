"""Which model family a LoRA file was made for, from what it holds: its layers' shapes, key prefixes, metadata.

Evidence, strongest first: the width of the text context its cross-attention key/value layers read (768 SD1.x,
2048 SDXL, 1024 SD2); text-encoder prefixes only one family writes (`lora_te_` SD1.x, `lora_te1_`/`lora_te2_` SDXL);
sd-scripts' `ss_base_model_version`; UNet names in the original layout (sd-scripts' SDXL names, unless the file
has the attention SD1.x has in input block 1, as old LDM-named SD1.x LoRAs do). A file none of these decide
(a tiny test model's LoRA of the UNet only, with no metadata; an SD2.x LoRA) has no known family; the tools then
use SD1.x's block map, as before families existed (SD2.x's UNet has SD1.x's blocks).
"""

from __future__ import annotations

import re
from typing import Mapping

from charframe.errors import CharframeError
from charframe.families.family import Family, families, get_family, of_base_model_version, of_context_width
from charframe.lora.format import FileModule, LoraNetwork

_CONTEXT = re.compile(r"_attn2_to_[kv]$")
_LDM_UNET = re.compile(r"^lora_unet_(input_blocks|output_blocks|middle_block)_")
_SD1_LDM = re.compile(r"^lora_unet_input_blocks_[12]_1_")  # SD1.x has attention at the first level, SDXL none


def in_features(module: FileModule) -> int | None:
    """The input width of the layer a module adapts (its flat input for a conv), from its factors' shapes."""
    t = module.tensors
    if module.kind == "lora":
        return int(t["lora_down.weight"].shape[1])
    if module.kind == "loha":
        return int(t["hada_w1_b"].shape[1])
    left = t["lokr_w1"].shape[1] if "lokr_w1" in t else t["lokr_w1_b"].shape[1]
    right = t["lokr_w2"].shape[1] if "lokr_w2" in t else t["lokr_w2_b"].shape[1]
    return int(left * right)


def context_width(modules: Mapping[str, FileModule]) -> int | None:
    """The text context width the file's cross-attention key/value layers read (None without such layers)."""
    for name, module in modules.items():
        if _CONTEXT.search(name):
            return in_features(module)
    return None


def network_family(net: LoraNetwork) -> Family | None:
    """The family a network was made for (see the module docstring), or None when nothing decides it."""
    width = context_width(net.modules)
    if width is not None and of_context_width(width) is not None:
        return of_context_width(width)
    names = list(net.modules)
    for fam in families():
        own = tuple(f"{te.lora_prefix}_" for te in fam.text_encoders)
        others = tuple(f"{te.lora_prefix}_" for f in families() if f.id != fam.id for te in f.text_encoders)
        if any(n.startswith(own) and not n.startswith(others) for n in names):
            return fam
    by_version = of_base_model_version(net.metadata.get("ss_base_model_version", ""))
    if by_version is not None:
        return by_version
    if any(_LDM_UNET.match(n) for n in names) and not any(_SD1_LDM.match(n) for n in names):
        return next((f for f in families() if f.unet_names == "ldm"), None)
    return None


def describe(fam: Family | None) -> str:
    """"SDXL" / "SD1.x", or what the tools do without a family."""
    return fam.name if fam is not None else f"unknown (the {get_family().name} block map is used)"


def check_same_family(path: object, lora_family: Family | None, model_family: Family) -> None:
    """Refuse a LoRA of another family than the model it is applied to (one line naming the file)."""
    if lora_family is not None and lora_family.id != model_family.id:
        raise CharframeError(f"{path}: is an {lora_family.name} LoRA, the model is {model_family.name}; "
                             f"use a LoRA trained on an {model_family.name} model")
