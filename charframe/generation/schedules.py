"""Noise schedules as WebUI computes them: the sigmas a k-diffusion sampler walks, the timesteps of DDIM/PLMS, the
continuous times of UniPC, all over the base model's own noise schedule (its `alphas_cumprod`).

Model sigmas are sqrt((1 - ᾱ)/ᾱ) for the 1000 training timesteps (SD1.5: 0.0292 … 14.61). A timestep between
two integers has the sigma interpolated in log space, and the reverse (`sigma_to_t`) likewise, as k-diffusion's
discrete denoiser does, so the UNet sees the same fractional timesteps WebUI gives it.

Schedule types (WebUI's `modules/sd_schedulers.py`, all n steps + a final 0 unless noted):
uniform = the model sigmas at n evenly spaced timesteps from 999 to 0; karras = Karras et al.'s rho = 7 ramp
between the model's smallest and largest sigma; exponential = evenly spaced in log sigma; polyexponential (rho 1);
sgm_uniform / normal = evenly spaced timesteps between those sigmas (n + 1 points without the last / n points);
kl_optimal (ends at the smallest sigma, no 0); align_your_steps (NVIDIA's SD1.5 list, log-linearly resampled);
simple / ddim = every k-th model sigma; beta = a Beta(0.6, 0.6) quantile ramp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from charframe.generation.samplers import Choice

#: NVIDIA's "Align Your Steps" sigmas for SD1.5, as WebUI ships them
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
BETA_ALPHA = BETA_BETA = 0.6  # WebUI's default Beta-schedule parameters


def alphas_cumprod(config: Any) -> np.ndarray:
    """ᾱ of a DDPM-style scheduler config, computed the way the LDM code WebUI runs does (float64, stored float32)."""
    cfg = dict(config)
    n = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 0.00085)), float(cfg.get("beta_end", 0.012))
    kind = cfg.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    else:
        raise ValueError(f"unsupported beta_schedule {kind!r}")
    return np.cumprod(1.0 - betas).astype(np.float32)


@dataclass(frozen=True)
class ModelSchedule:
    """The base model's discrete noise schedule, with k-diffusion's log-space conversions."""

    alphas_cumprod: np.ndarray  # float32, one per training timestep

    @property
    def sigmas(self) -> np.ndarray:
        ac = self.alphas_cumprod.astype(np.float32)
        return np.sqrt((1 - ac) / ac).astype(np.float32)

    @property
    def log_sigmas(self) -> np.ndarray:
        return np.log(self.sigmas).astype(np.float32)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_to_sigma(self, t: Any) -> np.ndarray:
        """Sigma at (fractional) timesteps, interpolated in log sigma, in float32 as WebUI computes it."""
        import torch

        t = torch.as_tensor(t, dtype=torch.float32)
        ls = torch.from_numpy(self.log_sigmas)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * ls[low] + w * ls[high]).exp().double().numpy()

    def sigma_to_t(self, sigma: np.ndarray | float) -> np.ndarray:
        log_sigma = np.log(np.asarray(sigma, dtype=np.float64))
        ls = self.log_sigmas.astype(np.float64)
        low = np.clip(np.searchsorted(ls, log_sigma, side="right") - 1, 0, len(ls) - 2)
        w = np.clip((ls[low] - log_sigma) / (ls[low] - ls[low + 1]), 0, 1)
        return (1 - w) * low + w * (low + 1)


# The schedules are computed in float32 with the same operations as WebUI/k-diffusion: a sampler's noise draws
# (Brownian tree queries) depend on the exact sigma values, not only on the schedule within rounding.
def _zero(sigmas: Any) -> np.ndarray:
    return np.append(np.asarray(sigmas, dtype=np.float32).astype(np.float64), 0.0)


def uniform(n: int, m: ModelSchedule) -> np.ndarray:
    import torch

    return _zero(m.t_to_sigma(torch.linspace(len(m.sigmas) - 1, 0, n)))


def karras(n: int, m: ModelSchedule, rho: float = 7.0) -> np.ndarray:
    import torch

    ramp = torch.linspace(0, 1, n)
    lo, hi = m.sigma_min ** (1 / rho), m.sigma_max ** (1 / rho)
    return _zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n: int, m: ModelSchedule) -> np.ndarray:
    import torch

    return _zero(torch.linspace(math.log(m.sigma_max), math.log(m.sigma_min), n).exp())


def polyexponential(n: int, m: ModelSchedule, rho: float = 1.0) -> np.ndarray:
    import torch

    ramp = torch.linspace(1, 0, n) ** rho
    lo, hi = math.log(m.sigma_min), math.log(m.sigma_max)
    return _zero(torch.exp(ramp * (hi - lo) + lo))


def _t_range(m: ModelSchedule) -> tuple[float, float]:
    return float(m.sigma_to_t(m.sigma_max)), float(m.sigma_to_t(m.sigma_min))


def sgm_uniform(n: int, m: ModelSchedule) -> np.ndarray:
    import torch

    start, end = _t_range(m)
    return _zero(m.t_to_sigma(torch.linspace(start, end, n + 1)[:-1]))


def normal(n: int, m: ModelSchedule) -> np.ndarray:
    import torch

    start, end = _t_range(m)
    return _zero(m.t_to_sigma(torch.linspace(start, end, n)))


def kl_optimal(n: int, m: ModelSchedule) -> np.ndarray:
    i = np.arange(n + 1) / n
    return np.tan(i * math.atan(m.sigma_min) + (1 - i) * math.atan(m.sigma_max)).astype(np.float32).astype(np.float64)


def align_your_steps(n: int, m: ModelSchedule) -> np.ndarray:
    if n == len(AYS_SD15):
        return _zero(np.array(AYS_SD15))
    xs = np.linspace(0, 1, len(AYS_SD15))
    ys = np.log(np.array(AYS_SD15)[::-1])
    return _zero(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1])


def simple(n: int, m: ModelSchedule) -> np.ndarray:
    sigmas = m.sigmas
    step = len(sigmas) / n
    return _zero([sigmas[-(1 + int(i * step))] for i in range(n)])


def ddim_uniform(n: int, m: ModelSchedule) -> np.ndarray:
    sigmas = m.sigmas
    picked = [sigmas[i] for i in range(1, len(sigmas), max(len(sigmas) // n, 1))]
    return _zero(picked[::-1])


def beta(n: int, m: ModelSchedule) -> np.ndarray:
    from scipy import stats

    ramp = [stats.beta.ppf(x, BETA_ALPHA, BETA_BETA) for x in 1 - np.linspace(0, 1, n)]
    return _zero([m.sigma_min + x * (m.sigma_max - m.sigma_min) for x in ramp])


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform, "karras": karras, "exponential": exponential, "polyexponential": polyexponential,
    "sgm_uniform": sgm_uniform, "kl_optimal": kl_optimal, "align_your_steps": align_your_steps, "simple": simple,
    "normal": normal, "ddim": ddim_uniform, "beta": beta,
}


def sigma_schedule(choice: Choice, steps: int, m: ModelSchedule) -> np.ndarray:
    """The sigmas a k-diffusion sampler walks for `steps` steps (WebUI's KDiffusionSampler.get_sigmas)."""
    assert choice.schedule is not None
    n = steps + 1 if choice.sampler.discard_penultimate else steps
    sigmas = SCHEDULES[choice.schedule.name](n, m)
    if choice.sampler.discard_penultimate:
        sigmas = np.concatenate([sigmas[:-2], sigmas[-1:]])
    return sigmas


def ddim_timesteps(steps: int) -> np.ndarray:
    """The model timesteps of WebUI's DDIM/PLMS, ascending (`range(0, 1000, 1000 // steps) + 1`)."""
    return np.clip(np.arange(0, 1000, 1000 // steps) + 1, 0, 999)


def unipc_times(steps: int, t_start: float = 1.0, total: int = 1000) -> np.ndarray:
    """UniPC's continuous times (time-uniform from `t_start` to 1/N), as WebUI's UniPC sampler steps them."""
    return np.linspace(t_start, 1.0 / total, steps + 1)


def vp_log_alpha(t: np.ndarray, m: ModelSchedule) -> np.ndarray:
    """log √ᾱ at continuous time t ∈ (0, 1], piecewise linear over the training timesteps (UniPC's 'discrete' VP)."""
    n = len(m.alphas_cumprod)
    grid = np.linspace(0.0, 1.0, n + 1)[1:]
    log_alpha = 0.5 * np.log(m.alphas_cumprod.astype(np.float64))
    return np.interp(np.asarray(t, dtype=np.float64), grid, log_alpha)


def timestep_sigmas(choice: Choice, steps: int, m: ModelSchedule) -> np.ndarray:
    """The noise levels (as sigmas) a timestep sampler visits, highest first: DDIM/PLMS from 951 (20 steps) down to
    timestep 1, UniPC from t = 1 down to 1/1000 in as many steps as DDIM has timesteps (29 at 28 steps, as in
    WebUI)."""
    if choice.sampler.function == "unipc":
        la = vp_log_alpha(unipc_times(len(ddim_timesteps(steps))), m)
        return np.sqrt(1 - np.exp(2 * la)) / np.exp(la)
    ts = ddim_timesteps(steps)[::-1]
    ac = m.alphas_cumprod.astype(np.float64)[ts]
    return np.sqrt((1 - ac) / ac)
