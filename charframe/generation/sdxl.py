"""SDXL generation as WebUI draws it: A1111 weighting on both text encoders, the pooled embedding, size ids, drawn
by charframe's WebUI sampling loop (`generation.passes`: the same samplers, schedules and seeds as SD1.x) over the
SDXL UNet and its ControlNets (plain, or union for xinsir's union ControlNets).

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
7. v-prediction models (NoobAI-XL v-pred) predict v; the denoiser turns it into the noise the samplers expect
   (eps = √ᾱ·v + √(1-ᾱ)·x), over the zero-terminal-SNR schedule where the model has one (`schedules`).
Prompt editing and alternation work as for SD1.x (each scheduled text is one `XLConditioning`); "pad prompt/
negative prompt" does not apply (prompt and negative of different lengths run as two UNet calls, WebUI's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from charframe.generation.denoiser import CFGDenoiser, CondSchedule, ControlRun
from charframe.generation.passes import Conds, PassSettings, Runner
from charframe.generation.prompt import encode_pair, encode_prompt
from charframe.generation.samplers import Choice
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


def encode_xl(text: str, comps: SDComponents) -> XLConditioning:
    """One text's SDXL conditioning (steps 1-4 of the module docstring; no padding to another text's length)."""
    import torch

    second = PenultimateStates(comps.text_encoder_2, comps.tokenizer_2, pooled=True)
    states1 = encode_prompt(text, comps.tokenizer, PenultimateStates(comps.text_encoder, comps.tokenizer))
    states2 = encode_prompt(text, comps.tokenizer_2, second)
    return XLConditioning(torch.cat([states1, states2.to(states1.device)], dim=-1), second.pooled[0])


def zero_negative(conds: Conds, negative: str) -> Conds:
    """An empty negative prompt as WebUI's SDXL conditions it: all zeros (states and pooled), both passes."""
    if negative != "":
        return conds
    import torch

    def zeros(s: CondSchedule) -> CondSchedule:
        return CondSchedule(tuple((end, XLConditioning(torch.zeros_like(c.states), torch.zeros_like(c.pooled)))
                                  for end, c in s.entries))

    return Conds((conds.first[0], zeros(conds.first[1])), (conds.hires[0], zeros(conds.hires[1])))


def time_ids(width: int, height: int) -> tuple[int, ...]:
    """SDXL's size/crop ids of an image drawn at width × height: original size, crop (0, 0), target size."""
    return (height, width, 0, 0, height, width)


class XLDenoiser(CFGDenoiser):
    """WebUI's CFG denoiser (`generation.denoiser`) for SDXL: its UNet and ControlNets also read the pooled
    embedding and the size ids; union ControlNets get their unit's control type; v-prediction output becomes
    noise. `modes[i]` is unit i's union control type (None for a single-type ControlNet)."""

    def __init__(self, *args: Any, ids: tuple[int, ...], modes: Sequence[int | None], v_pred: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ids, self.modes, self.v_pred = ids, list(modes), v_pred

    def _unet_xl(self, x: Any, t: Any, cond: XLConditioning) -> Any:
        import torch

        batch = x.shape[0]
        extra = {"text_embeds": cond.pooled, "time_ids": torch.tensor([self.ids] * batch, dtype=cond.pooled.dtype,
                                                                        device=x.device)}
        context = cond.states
        down = mid = None
        active = set(map(id, self._active()))
        for unit, mode in zip(self.controls, self.modes):
            if id(unit) not in active:
                continue
            dt = unit.model.dtype
            image = unit.image.to(dt).expand(batch, -1, -1, -1)
            args = dict(encoder_hidden_states=context.to(dt), conditioning_scale=unit.weight, return_dict=False,
                        added_cond_kwargs={k: v.to(dt) for k, v in extra.items()})
            if mode is None:
                d, m = unit.model(x.to(dt), t, controlnet_cond=image, **args)
            else:
                onehot = torch.zeros(batch, unit.model.config.num_control_type, dtype=dt, device=x.device)
                onehot[:, mode] = 1
                d, m = unit.model(x.to(dt), t, controlnet_cond=[image], control_type=onehot, control_type_idx=[mode],
                                  **args)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        dtype = self.unet.dtype
        self.unet_calls += 1
        out = self.unet(x.to(dtype), t, encoder_hidden_states=context.to(dtype),
                        added_cond_kwargs={k: v.to(dtype) for k, v in extra.items()},
                        down_block_additional_residuals=None if down is None else [r.to(dtype) for r in down],
                        mid_block_additional_residual=None if mid is None else mid.to(dtype), return_dict=False)[0]
        out = out.to(torch.float32)
        if self.v_pred:  # x is the VP latent √ᾱ·x0 + √(1-ᾱ)·ε; v = √ᾱ·ε - √(1-ᾱ)·x0  →  ε = √ᾱ·v + √(1-ᾱ)·x
            sigma = float(self.schedule.t_to_sigma(float(t.flatten()[0])))
            a = 1.0 / (sigma ** 2 + 1.0)
            out = a ** 0.5 * out + (1.0 - a) ** 0.5 * x.to(torch.float32)
        return out

    def eps(self, x_in: Any, t: float) -> Any:
        import torch

        cond, uncond = self.cond.at(self.step), self.uncond.at(self.step)
        self.step += 1
        n = x_in.shape[0]  # a batch of seeds (passes.Runner.images) shares the conditioning
        cond, uncond = (XLConditioning(c.states.expand(n, -1, -1), c.pooled.expand(n, -1)) for c in (cond, uncond))
        tt = torch.full((1,), float(t), device=x_in.device, dtype=torch.float32)
        if cond.states.shape[1] == uncond.states.shape[1]:
            both = XLConditioning(torch.cat([cond.states, uncond.states]), torch.cat([cond.pooled, uncond.pooled]))
            out = self._unet_xl(torch.cat([x_in, x_in]), tt.expand(2 * n), both)
            e_cond, e_uncond = out[:n], out[n:]
        else:
            e_cond = self._unet_xl(x_in, tt.expand(n), cond)
            e_uncond = self._unet_xl(x_in, tt.expand(n), uncond)
        return e_uncond + (e_cond - e_uncond) * self.cfg


class SDXLRunner(Runner):
    """`passes.Runner` over an SDXL model: WebUI's samplers and seeds, each pass conditioned on its own size.

    `modes`: each unit's union control type when the ControlNets are union ones, else None. A union model given
    to several units runs once per unit with that unit's type, weight and guidance range, as WebUI's ControlNet
    extension runs each unit."""

    def __init__(self, comps: SDComponents, controlnets: list[Any], sampler: Choice | str,
                 modes: Sequence[int] | None = None) -> None:
        super().__init__(comps, controlnets, sampler)
        self.modes: list[int | None] = list(modes) if modes is not None else [None] * len(controlnets)
        self.v_pred = comps.noise_scheduler.config.get("prediction_type") == "v_prediction"

    def _denoiser(self, units: list[ControlRun], conds: tuple[CondSchedule, CondSchedule], s: PassSettings,
                  steps: int, size: tuple[int, int]) -> Any:
        return XLDenoiser(self.comps.unet, units, conds[0], conds[1], s.cfg, self.schedule, steps,
                          ids=time_ids(*size), modes=self.modes, v_pred=self.v_pred)
