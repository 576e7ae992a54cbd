"""CLIP text states with clip skip: the one place a token window becomes conditioning.

Training captions (`training.text`), generated images (`generation.prompt`), training samples and preview
rows all call `clip_states`, so "clip skip 2" means the same thing everywhere: the hidden state `clip_skip`
layers from the end, passed through the final layer norm (as WebUI and sd-scripts do); clip skip 1 is the
last layer's output, already normalised.
"""

from __future__ import annotations

from typing import Any


def final_layer_norm(text_encoder: Any) -> Any:
    """The final layer norm of a CLIP text model (with or without transformers' `.text_model` level)."""
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


def clip_states(text_encoder: Any, input_ids: Any, clip_skip: int | None = 1) -> Any:
    """(batch, tokens, width) states of (batch, tokens) ids at `clip_skip` (None or ≤ 1 = the last layer)."""
    if not clip_skip or clip_skip <= 1:
        return text_encoder(input_ids)[0]
    out = text_encoder(input_ids, output_hidden_states=True, return_dict=True)
    return final_layer_norm(text_encoder)(out.hidden_states[-clip_skip])
