"""Which layers of a loaded model a kohya LoRA adapts, under which key names (sd-scripts' `networks/lora.py` rule).

The key names are the contract with every tool that loads the file (WebUI, ComfyUI, diffusers, sd-scripts,
LyCORIS, block-weight merging), so they are derived exactly as sd-scripts does: for each module of a target
class (UNet `Transformer2DModel`, plus `ResnetBlock2D`/`Downsample2D`/`Upsample2D` when conv is on; CLIP
`CLIPAttention`/`CLIPMLP`) every Linear/Conv2d child becomes `<prefix>_<path>` with dots turned into
underscores (`keys.kohya_name`). The prefixes and the UNet's naming come from the model family
(`charframe.families`): SD1.x writes `lora_te_…` and diffusers module paths (sd-scripts trains it on a UNet with
diffusers' names); SDXL writes `lora_te1_…`/`lora_te2_…` and the original layout's paths, because sd-scripts
trains SDXL on its own `sdxl_original_unet.py` (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
`lora_unet_input_blocks_3_0_op`). sd-scripts' CLIP has a `text_model.` level that recent transformers releases
dropped; `kohya_text_root` puts it back, so names never depend on the installed transformers version.

It lives with the key contract (`lora/`), not with the trainer: the trainer wraps these layers, and the
generator merges a finished LoRA into the same layers (the body set's face LoRA, the preview rows).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from torch import nn

from charframe.families.family import Family, get_family, of_unet_config
from charframe.families.ldm_names import unet_module_to_ldm
from charframe.lora.keys import kohya_name

UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


class _TextRoot(nn.Module):
    """Gives a CLIPTextModel without `.text_model` the module path sd-scripts names keys by."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_model = text_encoder


def kohya_text_root(text_encoder: nn.Module) -> nn.Module:
    """A module whose `named_modules()` read `text_model.encoder.layers.N...` on any transformers."""
    return text_encoder if hasattr(text_encoder, "text_model") else _TextRoot(text_encoder)


def model_family(unet: nn.Module, family: str | Family | None = None) -> Family:
    """The family named, or the UNet config's (SD1.x when it says nothing)."""
    return get_family(family) if family is not None else of_unet_config(dict(getattr(unet, "config", {}) or {}))


def encoders_of(text_encoder: Any) -> list[nn.Module]:
    """One text encoder, a sequence of them (SDXL: [CLIP-L, OpenCLIP-G]) or None, as a list (Nones dropped)."""
    if text_encoder is None:
        return []
    if isinstance(text_encoder, (list, tuple)):
        return [t for t in text_encoder if t is not None]
    return [text_encoder]


def unet_namer(unet: nn.Module, fam: Family) -> Callable[[str], str]:
    """diffusers UNet module path → the path sd-scripts names the layer by for this family."""
    if fam.unet_names == "diffusers":
        return lambda path: path
    if fam.unet_names != "ldm":
        raise ValueError(f"family {fam.id}: unknown unet_names {fam.unet_names!r}")
    per = int(unet.config.layers_per_block)
    with_attention = frozenset(i for i, block in enumerate(getattr(unet, "up_blocks", ())) if getattr(block, "attentions", None))
    return lambda path: unet_module_to_ldm(path, per, with_attention)


def _layers(root: nn.Module, targets: Sequence[str]) -> Iterator[tuple[str, nn.Module, bool]]:
    """(module path, layer, is_3x3_conv) of every Linear/Conv2d inside a module of a target class."""
    for name, module in root.named_modules():
        if type(module).__name__ not in targets:
            continue
        for child_name, child in module.named_modules():
            is_conv = isinstance(child, nn.Conv2d)
            if isinstance(child, nn.Linear) or is_conv:
                yield f"{name}.{child_name}", child, is_conv and tuple(child.kernel_size) != (1, 1)


def kohya_targets(
    unet: nn.Module, text_encoder: Any, conv: bool, family: str | Family | None = None
) -> Iterator[tuple[str, nn.Module, bool]]:
    """(key name, layer, is_3x3_conv) for every layer sd-scripts' networks.lora would wrap, text encoders first.

    `text_encoder`: one encoder, the family's encoders in order (SDXL: CLIP-L then OpenCLIP-G), or None (UNet only).
    `family` defaults to the UNet's (its config)."""
    fam = model_family(unet, family)
    for spec, encoder in zip(fam.text_encoders, encoders_of(text_encoder)):
        for path, layer, is_3x3 in _layers(kohya_text_root(encoder), TE_TARGETS):
            yield kohya_name(spec.lora_prefix, path), layer, is_3x3
    rename = unet_namer(unet, fam)
    for path, layer, is_3x3 in _layers(unet, UNET_TARGETS + (UNET_CONV_TARGETS if conv else ())):
        yield kohya_name(fam.unet_prefix, rename(path)), layer, is_3x3


def unet_key_renames(unet: nn.Module, family: str | Family | None = None) -> dict[str, str]:
    """kohya UNet names in diffusers paths → this family's names, for every layer a LoRA/LoCon may wrap (LyCORIS
    names layers by the module tree it walks; the file must carry sd-scripts' names). Empty when they agree."""
    fam = model_family(unet, family)
    if fam.unet_names == "diffusers":
        return {}
    rename = unet_namer(unet, fam)
    return {kohya_name(fam.unet_prefix, path): kohya_name(fam.unet_prefix, rename(path))
            for path, _, _ in _layers(unet, UNET_TARGETS + UNET_CONV_TARGETS)}
