"""The seam between generation and the model family: which prompt encoding and which pipelines draw a family's
images, picked by its data (`[generation] conditioning` of `data/families/<id>.toml`), and the first-pass sizes
its data lists.

- "clip" (SD1.x): `generation.prompt.encode_prompt` (one CLIP, A1111 weighting, clip skip) and `passes.Runner`
  (WebUI's sampling loop over the UNet and ControlNets);
- "sdxl": `generation.sdxl.encode_xl` (both encoders, pooled, WebUI's SDXL semantics) and `sdxl.SDXLRunner`
  (the same loop with the pooled embedding, size ids and union ControlNets).
`encode_prompts` (a padded prompt/negative pair) is what diffusers' pipelines take (previews, training samples).
`generate_set`, the preview grid and the training samples ask here; a new family adds one entry per table.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from charframe.errors import CharframeError
from charframe.families.family import Family, get_family
from charframe.generation.conditioning import conditioning as schedule_conditioning
from charframe.generation.passes import Conds, Runner
from charframe.generation.prompt import encode_pair, encode_prompt
from charframe.generation.samplers import Choice
from charframe.generation.sdxl import SDXLRunner, XLConditioning, encode_pair_xl, encode_xl, zero_negative
from charframe.models.controlnet_union import control_mode


def _encode_clip(prompt: str, negative: str, comps: Any, clip_skip: int = 1, embeddings: Any = None) -> tuple[Any, Any]:
    return encode_pair(prompt, negative, comps.tokenizer, comps.text_encoder, clip_skip, embeddings)


def _encode_xl(prompt: str, negative: str, comps: Any, clip_skip: int = 1, embeddings: Any = None) -> tuple[Any, Any]:
    return encode_pair_xl(prompt, negative, comps, clip_skip)  # textual-inversion embeddings are SD1.x's only


#: conditioning name → (prompt, negative, components, clip skip) → (positive, negative) conditioning
ENCODERS: dict[str, Callable[..., tuple[Any, Any]]] = {"clip": _encode_clip, "sdxl": _encode_xl}


def _text_clip(comps: Any, clip_skip: int, embeddings: Any) -> Callable[[str], Any]:
    return lambda text: encode_prompt(text, comps.tokenizer, comps.text_encoder, clip_skip, embeddings)


def _text_xl(comps: Any, clip_skip: int, embeddings: Any) -> Callable[[str], Any]:
    return lambda text: encode_xl(text, comps)  # clip skip does not apply; textual inversion is SD1.x's


#: conditioning name → (components, clip skip, embeddings) → one text's conditioning (what the loop schedules)
TEXT_ENCODERS: dict[str, Callable[[Any, int, Any], Callable[[str], Any]]] = {"clip": _text_clip, "sdxl": _text_xl}


def text_encoder(comps: Any, clip_skip: int = 1, embeddings: Any = None) -> Callable[[str], Any]:
    """`encode(text)` for the model's family, as generation conditions one text (SD1.x with the textual-inversion
    `embeddings` lookup its prompts may name)."""
    return TEXT_ENCODERS[conditioning(comps.family)](comps, clip_skip, embeddings)


def both_passes(comps: Any, prompt: str, negative: str, choice: Choice, steps: int, hires_steps: int,
                encode: Callable[[str], Any]) -> Conds:
    """Both passes' conditioning (`generation.conditioning`), with the family's rule for an empty negative (SDXL:
    all zeros, as WebUI)."""
    conds = schedule_conditioning(prompt, negative, choice, steps, hires_steps, encode)
    return zero_negative(conds, negative) if conditioning(comps.family) == "sdxl" else conds


def conditioning(family: str | Family) -> str:
    """A family's generation conditioning ("clip", "sdxl")."""
    return get_family(family).data.get("generation", {}).get("conditioning", "clip")


def encode_prompts(comps: Any, prompt: str, negative: str, clip_skip: int = 1, embeddings: Any = None) -> tuple[Any, Any]:
    """(positive, negative) conditioning of a prompt pair for the model's family, as WebUI computes it (SD1.x with
    the textual-inversion `embeddings` its prompts name)."""
    return ENCODERS[conditioning(comps.family)](prompt, negative, comps, clip_skip, embeddings)


def make_runner(comps: Any, controlnets: Sequence[Any], sampler: Choice | str, maps: Sequence[str] = (),
                where: Sequence[str] = ()) -> Any:
    """The family's two-pass runner over loaded ControlNets (one per unit; `maps` their units' control maps).

    Union ControlNets (SDXL) get each unit's control type from its map; a union ControlNet and a single-type one
    cannot share a pipeline in diffusers, so mixing them is refused naming the units' files (`where`)."""
    unions = [type(c).__name__ == "ControlNetUnionModel" for c in controlnets]
    if conditioning(comps.family) == "clip":
        return Runner(comps, list(controlnets), sampler)
    modes = None
    if any(unions):
        if not all(unions):
            plain = next(w for w, u in zip(where, unions) if not u)
            union = next(w for w, u in zip(where, unions) if u)
            raise CharframeError(f"{plain}: a single-type ControlNet beside the union ControlNet {union}; diffusers "
                                 "draws a union ControlNet only with other union ones: give every unit the union "
                                 "model (each with its own map) or none")
        modes = [control_mode(m, c, w) for m, c, w in zip(maps, controlnets, where)]
    return SDXLRunner(comps, list(controlnets), sampler, modes)


def first_pass_sizes(family: str | Family, size: int) -> list[tuple[int, int]] | None:
    """The family's first-pass sizes scaled to `size` (SDXL: its buckets at 1024 → `size`, multiples of 8), or
    None when the family draws at the template's own aspect ratio with the shorter side `size` (SD1.x)."""
    fam = get_family(family)
    buckets = fam.data.get("generation", {}).get("buckets")
    if not buckets:
        return None
    scale = size / fam.resolution
    return [(max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)) for w, h in buckets]


def pipeline_args(pos: Any, neg: Any, dtype: Any = None) -> dict[str, Any]:
    """The diffusers pipeline arguments that carry a prompt pair's conditioning (`encode_prompts`' result): the
    embeddings, and for SDXL the pooled ones (a text-to-image pipeline adds the size ids from its own size)."""
    if isinstance(pos, XLConditioning):
        args = dict(prompt_embeds=pos.states, negative_prompt_embeds=neg.states, pooled_prompt_embeds=pos.pooled,
                    negative_pooled_prompt_embeds=neg.pooled)
    else:
        args = dict(prompt_embeds=pos, negative_prompt_embeds=neg)
    return {k: v.to(dtype) for k, v in args.items()} if dtype is not None else args
