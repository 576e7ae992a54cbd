"""The two diffusion passes of one image, as WebUI runs them: txt2img over the sampler's schedule, then the hires
pass (decode, Lanczos upscale, encode, img2img) with exactly `hires_steps` (or `steps`) denoising steps.

`sample_latent` walks one pass: WebUI's sigma schedule for the sampler (see `schedules`), its step function (see
`ksampling`), over a `CFGDenoiser`. Img2img is WebUI's: the schedule for int(steps / denoise) steps, of which the
last `steps` are run, so the hires pass runs exactly the steps asked for (diffusers' img2img would run
int(steps × denoise)). Shared by `generate_set` and the benchmark, so both time the same code.

Seeds: the initial noise and every ancestral noise come, in WebUI's order, from one CPU generator seeded with the
image seed (WebUI's "RNG: CPU"), and the hires pass reseeds it as WebUI does; SDE samplers draw from a Brownian
tree seeded with the seed. A seed gives the same picture on any device up to kernel differences, and exactly the
same pixels on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from charframe.generation import ksampling
from charframe.generation.denoiser import CFGDenoiser, CondSchedule, ControlRun
from charframe.generation.samplers import Choice, find_sampler
from charframe.generation.schedules import (
    ModelSchedule, alphas_cumprod, ddim_timesteps, sigma_schedule, unipc_times,
)
from charframe.models.components import SDComponents

LATENT_CHANNELS = 4


@dataclass(frozen=True)
class PassSettings:
    """What one image needs besides its prompt, seed and control images."""

    steps: int
    cfg: float
    weights: tuple[float, ...]
    starts: tuple[float, ...]
    ends: tuple[float, ...]
    hires_scale: float = 1.0
    hires_denoise: float = 0.7
    hires_steps: int = 0
    pad_conds: bool = False


@dataclass(frozen=True)
class Conds:
    """Prompt and negative conditioning of both passes (prompt editing gives the hires pass its own schedule)."""

    first: tuple[CondSchedule, CondSchedule]
    hires: tuple[CondSchedule, CondSchedule]

    @classmethod
    def fixed(cls, pos: Any, neg: Any) -> "Conds":
        pair = (CondSchedule.fixed(pos), CondSchedule.fixed(neg))
        return cls(pair, pair)


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hires pass's size: scaled, multiples of 8."""
    return round(width * scale / 8) * 8, round(height * scale / 8) * 8


def img2img_split(steps: int, denoise: float) -> tuple[int, int]:
    """(schedule length, steps run) of WebUI's img2img with a fixed step count: the schedule is made for
    int(steps / denoise) steps and its last `steps` are run."""
    return int(steps / min(denoise, 0.999)), steps


def sample_latent(choice: Choice, steps: int, m: ModelSchedule, den: Any, noise0: Any, randn: Callable[[], Any],
                  seed: int, init: Any = None, denoise: float = 1.0) -> Any:
    """One pass: txt2img from `noise0` (init None), or img2img of `init` running exactly `steps` steps.

    `den` has `k(x, sigma)`, `vp(x, t)` and `set_sampling_step(i)`; `randn()` draws the next ancestral noise."""
    s = choice.sampler
    noise = lambda sigma, sigma_next: randn()  # noqa: E731 - WebUI's hijacked randn_like: the image generator
    if s.kind == "timesteps":
        ac = m.alphas_cumprod
        if init is None:
            ts, x, t_start = ddim_timesteps(steps), noise0, 1.0
        else:
            full, _ = img2img_split(steps, denoise)
            all_ts = ddim_timesteps(full)
            ts = all_ts[:steps - 1]
            a = float(ac[all_ts[steps - 1]])
            x, t_start = init * a ** 0.5 + noise0 * (1 - a) ** 0.5, float(ts[-1]) / 1000 + 1 / 1000
        if s.function == "unipc":
            return ksampling.unipc(den.vp, x, unipc_times(len(ts), t_start), ac, step=den.set_sampling_step)
        return ksampling.TIMESTEP_SAMPLERS[s.function](den.vp, x, ts, ac, step=den.set_sampling_step)
    full = steps if init is None else img2img_split(steps, denoise)[0]
    sigmas = sigma_schedule(choice, full, m)
    run = sigmas if init is None else sigmas[full - steps:]
    x = noise0 * float(run[0]) if init is None else init + noise0 * float(run[0])
    kwargs: dict[str, Any] = dict(step=den.set_sampling_step, eta=1.0, s_noise=1.0, solver_type=s.solver_type)
    if s.brownian_noise:
        positive = sigmas[sigmas > 0]
        noise = ksampling.BrownianNoise(x, float(np.float32(positive.min())), float(np.float32(sigmas.max())), seed)
    if s.kind == "range":
        lo, hi, n = (m.sigma_min, m.sigma_max, steps) if init is None else (float(run[-2]), float(run[0]), len(run) - 1)
        return ksampling.RANGE_SAMPLERS[s.function](den.k, x, lo, hi, n=n, noise=noise, **kwargs)
    return ksampling.SIGMA_SAMPLERS[s.function](den.k, x, run, noise=noise, **kwargs)


def to_tensor(image: Image.Image, device: Any) -> Any:
    """(1, 3, H, W) float32 in [0, 1]."""
    import torch

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(device)


class Runner:
    """One loaded model with its ControlNet(s) and sampler; `image` makes one finished picture."""

    def __init__(self, comps: SDComponents, controlnets: list[Any], sampler: Choice | str) -> None:
        self.comps = comps
        self.controlnets = controlnets
        self.choice = sampler if isinstance(sampler, Choice) else find_sampler(sampler)
        self.schedule = ModelSchedule(alphas_cumprod(comps.noise_scheduler.config))
        self.device = comps.unet.device
        self.empty: Any = None  # the empty prompt's embeddings (for pad_conds), set by the caller when needed
        self.last_unet_calls: list[int] = []
        self.last_padded = False

    def _decode(self, latent: Any) -> Image.Image:
        import torch

        vae = self.comps.vae
        with torch.inference_mode():
            pixels = vae.decode((latent / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]
        pixels = torch.clamp((pixels.float() + 1.0) / 2.0, 0.0, 1.0)[0]
        return Image.fromarray((255.0 * pixels.permute(1, 2, 0).cpu().numpy()).astype(np.uint8))

    def _encode(self, image: Image.Image) -> Any:
        import torch

        vae = self.comps.vae
        with torch.inference_mode():
            dist = vae.encode((to_tensor(image, self.device) * 2 - 1).to(vae.dtype)).latent_dist
        return dist.mean.float() * vae.config.scaling_factor

    def _pass(self, conds: tuple[CondSchedule, CondSchedule], controls: list[Image.Image], seed: int | Sequence[int],
              s: PassSettings, steps: int, init: Any = None) -> Any:
        """One pass of one image, or of a batch (`seed` a list: the latents of several seeds at once, each drawing
        its noise from its own generator in the order it would alone)."""
        import torch

        seeds = [int(seed)] if isinstance(seed, int) else [int(x) for x in seed]
        width, height = controls[0].size
        units = [ControlRun(model, to_tensor(img, self.device), w, a, b)
                 for model, img, w, a, b in zip(self.controlnets, controls, s.weights, s.starts, s.ends)]
        den = CFGDenoiser(self.comps.unet, units, conds[0], conds[1], s.cfg, self.schedule, steps, pad=s.pad_conds,
                          empty=self.empty)
        generators = [torch.Generator("cpu").manual_seed(x) for x in seeds]
        shape = (1, LATENT_CHANNELS, height // 8, width // 8)
        randn = lambda: torch.cat([torch.randn(shape, generator=g) for g in generators]).to(self.device)  # noqa: E731
        with torch.inference_mode():
            latent = sample_latent(self.choice, steps, self.schedule, den, randn(), randn, seeds[0], init,
                                   s.hires_denoise if init is not None else 1.0)
        self.last_unet_calls.append(den.unet_calls)
        self.last_padded = self.last_padded or den.padded
        return latent

    def image(self, conds: Conds | Any, neg: Any = None, controls: list[Image.Image] | None = None, seed: int = 0,
              s: PassSettings | None = None, hires_controls: list[Image.Image] | None = None) -> Image.Image:
        """One finished image (first pass, then the hires pass when `hires_scale` > 1). `conds` is a `Conds`, or
        the prompt's embeddings with `neg` the negative's (no prompt editing)."""
        assert controls is not None and s is not None
        if not isinstance(conds, Conds):
            conds = Conds.fixed(conds, neg)
        self.last_unet_calls, self.last_padded = [], False
        first = self._decode(self._pass(conds.first, controls, seed, s, s.steps))
        if s.hires_scale <= 1:
            return first
        size = hires_size(*controls[0].size, s.hires_scale)
        hi = hires_controls or [c.resize(size, Image.LANCZOS) for c in controls]
        init = self._encode(first.resize(size, Image.LANCZOS))
        return self._decode(self._pass(conds.hires, hi, seed, s, s.hires_steps or s.steps, init))

    @property
    def batches(self) -> bool:
        """Whether `images` gives each seed its own picture with this sampler: not for the SDE samplers, whose
        Brownian tree is one image's (seeded with its seed)."""
        return not self.choice.sampler.brownian_noise

    def images(self, conds: Conds | Any, neg: Any = None, controls: list[Image.Image] | None = None,
               seeds: Sequence[int] = (), s: PassSettings | None = None,
               hires_controls: list[Image.Image] | None = None) -> list[Image.Image]:
        """The finished images of several seeds in one batch (same prompt, control maps and settings): each seed's
        own generator draws its noise in the order `image` draws it, so each picture is the one `image` gives for
        that seed alone, up to the batched kernels' rounding. The VAE decodes and encodes one image at a time."""
        import torch

        assert controls is not None and s is not None and seeds and self.batches
        if not isinstance(conds, Conds):
            conds = Conds.fixed(conds, neg)
        self.last_unet_calls, self.last_padded = [], False
        latents = self._pass(conds.first, controls, seeds, s, s.steps)
        first = [self._decode(latents[i:i + 1]) for i in range(len(seeds))]
        if s.hires_scale <= 1:
            return first
        size = hires_size(*controls[0].size, s.hires_scale)
        hi = hires_controls or [c.resize(size, Image.LANCZOS) for c in controls]
        init = torch.cat([self._encode(f.resize(size, Image.LANCZOS)) for f in first])
        latents = self._pass(conds.hires, hi, seeds, s, s.hires_steps or s.steps, init)
        return [self._decode(latents[i:i + 1]) for i in range(len(seeds))]
