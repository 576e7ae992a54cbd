"""CLIP text states with clip skip: the one place a token window becomes conditioning.

Training captions (`training.text`), generated images (`generation.prompt`), training samples and preview
rows all call `clip_states`, so "clip skip 2" means the same thing everywhere: the hidden state `clip_skip`
layers from the end, passed through the final layer norm (as WebUI and sd-scripts do); clip skip 1 is the
last layer's output, already normalised. `check_clip_skip` is the one check that a clip skip fits the loaded
text encoder (training and generation both ask it before the first step or image).
"""

from __future__ import annotations

from typing import Any

from charframe.errors import CharframeError


def final_layer_norm(text_encoder: Any) -> Any:
    """The final layer norm of a CLIP text model (with or without transformers' `.text_model` level)."""
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


def clip_states(text_encoder: Any, input_ids: Any, clip_skip: int | None = 1) -> Any:
    """(batch, tokens, width) states of (batch, tokens) ids at `clip_skip` (None or ≤ 1 = the last layer)."""
    if not clip_skip or clip_skip <= 1:
        return text_encoder(input_ids)[0]
    out = text_encoder(input_ids, output_hidden_states=True, return_dict=True)
    return final_layer_norm(text_encoder)(out.hidden_states[-clip_skip])


def check_clip_skip(clip_skip: int, text_encoder: Any, where: str | None = None) -> None:
    """clip_skip counts text encoder layers from the end: it cannot exceed the model's layer count.

    `where` names the setting in a file (`Characters/krnk.toml: generation.clip_skip`); without it the message
    names the parameter (`{param}`: the CLI's flag).
    """
    config = getattr(text_encoder, "config", None)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    if layers and clip_skip > layers:
        fix = f"is beyond the text encoder's {layers} layers; use 1..{layers} (2 for most anime models)"
        if where:
            raise CharframeError(f"{where} = {clip_skip} {fix}")
        raise CharframeError(f"{{param}} {clip_skip} {fix}", param="clip_skip")
