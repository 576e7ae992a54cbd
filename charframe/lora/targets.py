"""Which layers of a loaded model a kohya LoRA adapts, under which key names (sd-scripts' `networks/lora.py` rule).

The key names are the contract with every tool that loads the file (WebUI, ComfyUI, diffusers, sd-scripts,
LyCORIS, block-weight merging), so they are derived exactly as sd-scripts does: for each module of a target
class (UNet `Transformer2DModel`, plus `ResnetBlock2D`/`Downsample2D`/`Upsample2D` when conv is on; CLIP
`CLIPAttention`/`CLIPMLP`) every Linear/Conv2d child becomes `lora_unet_<path>` or `lora_te_<path>` with dots
turned into underscores (`keys.kohya_name`). sd-scripts' CLIP has a `text_model.` level that recent
transformers releases dropped; `kohya_text_root` puts it back, so names never depend on the installed
transformers version.

It lives with the key contract (`lora/`), not with the trainer: the trainer wraps these layers, and the
generator merges a finished LoRA into the same layers (the body set's face LoRA, the preview rows).
"""

from __future__ import annotations

from typing import Iterator

from torch import nn

from charframe.lora.keys import TE_PREFIX, UNET_PREFIX, kohya_name

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


def kohya_targets(
    unet: nn.Module, text_encoder: nn.Module | None, conv: bool
) -> Iterator[tuple[str, nn.Module, bool]]:
    """(key name, layer, is_3x3_conv) for every layer sd-scripts' networks.lora would wrap."""
    roots = [(UNET_PREFIX, unet, UNET_TARGETS + (UNET_CONV_TARGETS if conv else ()))]
    if text_encoder is not None:
        roots.insert(0, (TE_PREFIX, kohya_text_root(text_encoder), TE_TARGETS))
    for prefix, root, targets in roots:
        for name, module in root.named_modules():
            if type(module).__name__ not in targets:
                continue
            for child_name, child in module.named_modules():
                is_linear = isinstance(child, nn.Linear)
                is_conv = isinstance(child, nn.Conv2d)
                if not (is_linear or is_conv):
                    continue
                key = kohya_name(prefix, f"{name}.{child_name}")
                yield key, child, is_conv and tuple(child.kernel_size) != (1, 1)
