"""SDXL generation as WebUI draws it: A1111 weighting on both text encoders, the pooled embedding, size ids, and
diffusers' SDXL ControlNet pipelines (plain, or union for xinsir's union ControlNets) for both passes.

What WebUI computes for an SDXL prompt (`sd_hijack_clip`, `sd_models_xl`), step by step:
1. Each encoder reads the prompt as WebUI's 77-token chunks with their weights (`generation.prompt`, the same
   parsing and chunking as SD1.x: the two tokenizers share one vocabulary, so the chunks line up).
2. Each encoder's output is its penultimate hidden state without the final layer norm (the SDXL embedders'
   `layer = "penultimate"`); clip skip does not apply (WebUI's default, `sdxl_clip_l_skip` off; sd-scripts
   ignores it too). For the OpenCLIP encoder every token after the first end token is its pad token (id 0).
3. Emphasis (`(word:1.3)`) multiplies each encoder's states and restores their mean, per encoder.
4. The states are joined along the width (CLIP-L 768 + OpenCLIP-G 1280 = 2048); the pooled embedding is the
   second encoder's final (normed) state at the first chunk's end token (the highest token id), through its
   text projection, computed before emphasis.
5. An empty negative prompt is all zeros, states and pooled (WebUI's `force_zero_embeddings`).
6. The size ids are original size = target size = the image being drawn, crop (0, 0): the first pass's size for
   the first pass, the hires size for the hires pass (WebUI conditions the hires pass on its own size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from charframe.generation.passes import PassSettings, hires_size
from charframe.generation.prompt import encode_pair
from charframe.models.components import SDComponents


@dataclass(frozen=True)
class XLConditioning:
    """One prompt's SDXL conditioning: the joined token states and the pooled embedding."""

    states: Any  # (1, 77·chunks, width 1 + width 2)
    pooled: Any  # (1, projection)


class PenultimateStates:
    """A text encoder as WebUI's SDXL embedders read it, callable where `generation.prompt` calls a CLIP encoder:
    `(ids) → (penultimate states,)`. With `pooled`, it keeps the pooled embedding of the first chunk of every call
    (from the unweighted states) in `self.pooled`."""

    def __init__(self, text_encoder: Any, tokenizer: Any, *, pooled: bool = False) -> None:
        self.text_encoder = text_encoder
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.keep_pooled = pooled
        self.pooled: list[Any] = []

    @property
    def device(self) -> Any:
        return self.text_encoder.device

    def __call__(self, input_ids: Any) -> tuple[Any]:
        import torch

        ids = input_ids.clone()
        if self.pad != self.eos:  # OpenCLIP: pad after the first end token (WebUI's process_tokens)
            after = torch.cumsum((ids == self.eos).int(), dim=1) - (ids == self.eos).int() > 0
            ids[after] = self.pad
        out = self.text_encoder(ids, output_hidden_states=True, return_dict=True)
        if self.keep_pooled:
            self.pooled.append(pooled_embedding(self.text_encoder, out.last_hidden_state[:1], ids[:1]))
        return (out.hidden_states[-2],)


def pooled_embedding(text_encoder: Any, last_hidden: Any, input_ids: Any) -> Any:
    """The projected final state at the highest token id of each row (the first end token), as SDXL's OpenCLIP
    embedder pools (`text.argmax(dim=-1)`)."""
    import torch

    index = input_ids.to(last_hidden.device).argmax(dim=-1)
    state = last_hidden[torch.arange(last_hidden.shape[0], device=last_hidden.device), index]
    projection = text_encoder.text_projection
    return projection(state.to(projection.weight.dtype))


def encode_pair_xl(prompt: str, negative: str, comps: SDComponents, clip_skip: int = 1) -> tuple[XLConditioning, XLConditioning]:
    """WebUI's SDXL conditioning of prompt and negative (see the module docstring); `clip_skip` is accepted for
    the shared signature and does not apply."""
    import torch

    first = PenultimateStates(comps.text_encoder, comps.tokenizer)
    second = PenultimateStates(comps.text_encoder_2, comps.tokenizer_2, pooled=True)
    pos1, neg1 = encode_pair(prompt, negative, comps.tokenizer, first)
    pos2, neg2 = encode_pair(prompt, negative, comps.tokenizer_2, second)
    pooled_pos, pooled_neg = second.pooled
    pos = XLConditioning(torch.cat([pos1, pos2.to(pos1.device)], dim=-1), pooled_pos)
    neg = XLConditioning(torch.cat([neg1, neg2.to(neg1.device)], dim=-1), pooled_neg)
    if negative == "":
        neg = XLConditioning(torch.zeros_like(neg.states), torch.zeros_like(neg.pooled))
    return pos, neg


class SDXLRunner:
    """The SDXL pipelines over one loaded model, its ControlNet(s) and scheduler (built once, reused per image).

    `modes`: each unit's union control type (diffusers' `control_mode`) when the ControlNets are union ones, else
    None. A union model given to several units runs once per unit with that unit's type, weight and guidance
    range, as WebUI's ControlNet extension runs each unit."""

    def __init__(self, comps: SDComponents, controlnets: list[Any], scheduler: Any,
                 modes: Sequence[int] | None = None) -> None:
        import diffusers
        import torch
        from diffusers.models import controlnets as multi  # MultiControlNetUnionModel is not exported at the top

        self.multi = len(controlnets) > 1
        self.modes = list(modes) if modes is not None else None
        union = "Union" if self.modes is not None else ""
        multi_cls = getattr(multi, f"MultiControlNet{union}Model")
        controlnet = multi_cls(controlnets) if self.multi else controlnets[0]
        parts = dict(vae=comps.vae, text_encoder=comps.text_encoder, text_encoder_2=comps.text_encoder_2,
                     tokenizer=comps.tokenizer, tokenizer_2=comps.tokenizer_2, unet=comps.unet, controlnet=controlnet,
                     scheduler=scheduler, add_watermarker=False)
        self.txt2img = getattr(diffusers, f"StableDiffusionXLControlNet{union}Pipeline")(**parts)
        self.img2img = getattr(diffusers, f"StableDiffusionXLControlNet{union}Img2ImgPipeline")(**parts)
        for pipe in (self.txt2img, self.img2img):
            pipe.set_progress_bar_config(disable=True)
        if comps.vae.dtype == torch.float32 and comps.vae.config.get("force_upcast"):
            # the img2img pass would "upcast" an fp32 VAE to fp32 around every encode (and diffusers warns about
            # each cast); the switch only matters for a half-precision VAE
            comps.vae.register_to_config(force_upcast=False)
        self.device = comps.unet.device

    def _control_args(self, s: PassSettings, images: list[Image.Image], key: str) -> dict[str, Any]:
        args: dict[str, Any]
        if self.multi:
            args = dict(controlnet_conditioning_scale=list(s.weights), control_guidance_start=list(s.starts),
                        control_guidance_end=list(s.ends))
        else:
            args = dict(controlnet_conditioning_scale=s.weights[0], control_guidance_start=s.starts[0],
                        control_guidance_end=s.ends[0])
        if self.modes is not None:
            return args | {"control_image": list(images), "control_mode": list(self.modes)}
        return args | {key: images if self.multi else images[0]}

    @staticmethod
    def _generator(seed: int) -> Any:
        import torch

        return torch.Generator("cpu").manual_seed(int(seed))

    def image(self, pos: XLConditioning, neg: XLConditioning, controls: list[Image.Image], seed: int,
              s: PassSettings, hires_controls: list[Image.Image] | None = None) -> Image.Image:
        """One finished image (first pass, then the hires pass when `hires_scale` > 1); each pass is conditioned
        on its own size (original = target = the pass's height and width, crop 0, 0)."""
        import torch

        width, height = controls[0].size
        embeds = dict(prompt_embeds=pos.states, negative_prompt_embeds=neg.states, pooled_prompt_embeds=pos.pooled,
                      negative_pooled_prompt_embeds=neg.pooled, guidance_scale=s.cfg, output_type="pil")
        with torch.inference_mode():
            first = self.txt2img(
                **embeds, width=width, height=height, original_size=(height, width), target_size=(height, width),
                num_inference_steps=s.steps, generator=self._generator(seed), **self._control_args(s, controls, "image"),
            ).images[0]
            if s.hires_scale <= 1:
                return first
            size = hires_size(width, height, s.hires_scale)
            hi = hires_controls or [c.resize(size, Image.LANCZOS) for c in controls]
            return self.img2img(
                **embeds, image=first.resize(size, Image.LANCZOS), width=size[0], height=size[1],
                original_size=(size[1], size[0]), target_size=(size[1], size[0]), strength=s.hires_denoise,
                num_inference_steps=s.hires_steps or s.steps, generator=self._generator(seed),
                **self._control_args(s, hi, "control_image"),
            ).images[0]
