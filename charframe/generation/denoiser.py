"""Classifier-free guidance over diffusers' UNet and ControlNet(s), one call per sampler step, as WebUI's
CFGDenoiser does it.

- Conditioning per call: the prompt-editing schedule (`CondSchedule`) is indexed by the number of denoiser calls
  so far, exactly as WebUI indexes it (second-order samplers make two calls per step; their schedules are
  counted in steps × 2).
- Prompt and negative of the same length go through the UNet as one batch of two; of different lengths (more
  75-token chunks on one side), as two separate calls — WebUI's default. With `pad` on, the shorter one is
  padded with the empty prompt's chunks first (WebUI's "Pad prompt/negative prompt"), and `padded` says so.
- ControlNet units act while `start ≤ step/steps ≤ end`, where step is the sampler's step as WebUI's sampler
  callback reports it (sd-webui-controlnet's guidance window).
- `k(x, sigma)` is the k-diffusion form (denoised latent), `vp(x, t)` the noise prediction at a model timestep
  for DDIM/PLMS/UniPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charframe.generation.schedules import ModelSchedule


@dataclass(frozen=True)
class CondSchedule:
    """One prompt's conditioning: [(last step, embeddings)], WebUI's list of ScheduledPromptConditioning."""

    entries: tuple[tuple[int, Any], ...]

    @classmethod
    def fixed(cls, cond: Any) -> "CondSchedule":
        return cls(((1 << 30, cond),))

    def at(self, step: int) -> Any:
        """The embeddings for denoiser call `step` (0-based): the first entry that lasts until at least that step;
        past the end, the first one (WebUI's reconstruct_cond_batch does the same)."""
        return next((cond for end, cond in self.entries if step <= end), self.entries[0][1])


@dataclass(frozen=True)
class ControlRun:
    """One ControlNet unit for one pass: model, control image (1, 3, H, W) in [0, 1], weight, guidance window."""

    model: Any
    image: Any
    weight: float
    start: float
    end: float


class CFGDenoiser:
    def __init__(self, unet: Any, controls: list[ControlRun], cond: CondSchedule, uncond: CondSchedule, cfg: float,
                 schedule: ModelSchedule, steps: int, *, pad: bool = False, empty: Any = None) -> None:
        self.unet, self.controls, self.cond, self.uncond, self.cfg = unet, controls, cond, uncond, cfg
        self.schedule, self.steps = schedule, steps
        self.pad, self.empty = pad, empty
        self.step = 0  # denoiser calls so far: picks the prompt-editing text
        self.sampling_step = 0  # the sampler's step, set after each step's first call: the ControlNet window
        self.unet_calls = 0
        self.padded = False

    def set_sampling_step(self, i: int) -> None:
        self.sampling_step = i

    def _active(self) -> list[ControlRun]:
        done = self.sampling_step / self.steps
        return [c for c in self.controls if c.start <= done <= c.end]

    def _unet(self, x: Any, t: Any, context: Any) -> Any:
        import torch

        batch = x.shape[0]
        down = mid = None
        for unit in self._active():
            image = unit.image.to(unit.model.dtype).expand(batch, -1, -1, -1)
            d, m = unit.model(x.to(unit.model.dtype), t, encoder_hidden_states=context.to(unit.model.dtype),
                              controlnet_cond=image, conditioning_scale=unit.weight, return_dict=False)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        dtype = self.unet.dtype
        self.unet_calls += 1
        out = self.unet(x.to(dtype), t, encoder_hidden_states=context.to(dtype),
                        down_block_additional_residuals=None if down is None else [r.to(dtype) for r in down],
                        mid_block_additional_residual=None if mid is None else mid.to(dtype), return_dict=False)[0]
        return out.to(torch.float32)

    def eps(self, x_in: Any, t: float) -> Any:
        """CFG noise prediction for model input `x_in` at model timestep `t` (fractional allowed)."""
        import torch

        cond, uncond = self.cond.at(self.step), self.uncond.at(self.step)
        self.step += 1
        self.padded = False
        if self.pad and cond.shape[1] != uncond.shape[1] and self.empty is not None:
            repeats = abs(cond.shape[1] - uncond.shape[1]) // self.empty.shape[1]
            extra = self.empty.expand(1, -1, -1).repeat(1, repeats, 1).to(cond)
            cond, uncond = (torch.cat([cond, extra], 1), uncond) if cond.shape[1] < uncond.shape[1] \
                else (cond, torch.cat([uncond, extra], 1))
            self.padded = True
        n = x_in.shape[0]  # a batch of seeds (passes.Runner.images) shares the conditioning
        tt = torch.full((1,), float(t), device=x_in.device, dtype=torch.float32)
        cond, uncond = cond.expand(n, -1, -1), uncond.expand(n, -1, -1)
        if cond.shape[1] == uncond.shape[1]:
            out = self._unet(torch.cat([x_in, x_in]), tt.expand(2 * n), torch.cat([cond, uncond]))
            e_cond, e_uncond = out[:n], out[n:]
        else:
            e_cond = self._unet(x_in, tt.expand(n), cond)
            e_uncond = self._unet(x_in, tt.expand(n), uncond)
        return e_uncond + (e_cond - e_uncond) * self.cfg

    def k(self, x: Any, sigma: float) -> Any:
        """The denoised latent at noise level sigma (k-diffusion's discrete eps denoiser)."""
        c_in = 1.0 / (sigma ** 2 + 1) ** 0.5
        return x - self.eps(x * c_in, float(self.schedule.sigma_to_t(sigma))) * sigma

    def vp(self, x: Any, t: float) -> Any:
        """The noise prediction for a VP latent at model timestep t (DDIM, PLMS, UniPC)."""
        return self.eps(x, t)
