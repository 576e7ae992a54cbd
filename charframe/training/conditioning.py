"""Captions → what the UNet is conditioned on, for the model's family, and the cache of frozen text encoders' outputs.

The family's data names its conditioning (`[training] conditioning`): "clip" (SD1.x: one CLIP's states at the
run's clip skip, `training.text`) or "sdxl" (`training.sdxl`: both encoders, the pooled embedding, size/crop time
ids). When the text encoders are not trained (SDXL's default) their outputs are cached by caption: each distinct
caption is encoded once per run. A caption variant (prefix, suffix, shuffled tags) is a caption of its own, so
variants are kept rather than lost (sd-scripts refuses shuffled captions when it caches text-encoder outputs);
past `limit` captions the rest is encoded every time.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from charframe.families.family import get_family
from charframe.training.plan import Recipe
from charframe.training.sdxl import sdxl_text, sdxl_time_ids
from charframe.models.embeddings import EmbeddingSet
from charframe.training.text import encode, tokenize, tokenize_with

#: (text tensors per caption, batch-first) of a caption batch
TextOut = tuple[torch.Tensor, ...]


class TextCache:
    """Frozen text encoders' outputs by caption (on the device they were made on)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.entries: dict[str, TextOut] = {}
        self.encoded = 0  # captions encoded (cache misses), for tests and logs

    def __call__(self, captions: Sequence[str], encode_batch: Callable[[list[str]], TextOut]) -> TextOut:
        missing = list(dict.fromkeys(c for c in captions if c not in self.entries))
        fresh: dict[str, TextOut] = {}
        if missing:
            with torch.no_grad():
                outs = encode_batch(missing)
            self.encoded += len(missing)
            fresh = {c: tuple(t[i].detach() for t in outs) for i, c in enumerate(missing)}
            room = max(0, self.limit - len(self.entries))
            self.entries.update(dict(list(fresh.items())[:room]))
        rows = [self.entries.get(c) or fresh[c] for c in captions]
        return tuple(torch.stack([row[k] for row in rows]) for k in range(len(rows[0])))


def _clip(comps: Any, captions: list[str], recipe: Recipe, embeddings: EmbeddingSet | None = None) -> TextOut:
    ids = tokenize_with(comps.tokenizer, captions, recipe.max_token_length, embeddings) if embeddings \
        else tokenize(comps.tokenizer, captions, recipe.max_token_length)
    return (encode(comps.text_encoder, ids, recipe.clip_skip),)


def _sdxl(comps: Any, captions: list[str], recipe: Recipe, embeddings: EmbeddingSet | None = None) -> TextOut:
    return sdxl_text(comps, captions)  # embeddings: SD1.x only (training.pivotal refuses them on SDXL)


#: conditioning name (a family's `[training] conditioning`) → its text part (captions may call embeddings)
TEXT: dict[str, Callable[..., TextOut]] = {"clip": _clip, "sdxl": _sdxl}


def conditioning_kind(comps: Any) -> str:
    return get_family(comps.family).data.get("training", {}).get("conditioning", "clip")


def condition(comps: Any, captions: Sequence[str], recipe: Recipe, *, sizes: Sequence[tuple[int, int, bool]] = (),
              bucket: tuple[int, int] | None = None, cache: TextCache | None = None,
              embeddings: EmbeddingSet | None = None) -> tuple[torch.Tensor, dict | None]:
    """(encoder hidden states, the UNet's `added_cond_kwargs` or None) for a caption batch; `sizes` (file w, h,
    flipped per image) and `bucket` (w, h) give SDXL's time ids; `embeddings`: those the captions call (pivotal)."""
    kind = conditioning_kind(comps)
    text = TEXT[kind]
    out = cache(captions, lambda c: text(comps, c, recipe, embeddings)) if cache is not None \
        else text(comps, list(captions), recipe, embeddings)
    if kind != "sdxl":
        return out[0], None
    states, pooled = out
    ids = sdxl_time_ids(sizes, bucket).to(states.device, states.dtype)
    return states, {"text_embeds": pooled, "time_ids": ids}
