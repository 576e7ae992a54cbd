"""WebUI's samplers as step functions over a denoiser call, so each image walks the schedule WebUI walks.

Written from the published methods (Karras et al. 2022 for Euler/Heun/the ancestral step; Lu et al.'s DPM-Solver
and DPM-Solver++ for DPM2, DPM fast/adaptive, 2S, 2M, SDE and 3M; linear multistep for LMS; DDIM, PLMS and
UniPC over model timesteps) in the form k-diffusion and WebUI run them: same order of operations, same model
calls, same places where noise is drawn, so a seed means the same picture.

Interfaces:
- `model(x, sigma) -> denoised` (k-diffusion form) for the sigma samplers;
  `eps_model(x, t) -> eps` at a (possibly fractional) model timestep for DDIM/PLMS/UniPC;
- `noise(sigma, sigma_next) -> N(0, 1) like x` (ancestral: the image's CPU generator; SDE: a Brownian tree);
- `step(i)` is told after the first model call of step i, where WebUI's sampler callback sets its sampling step
  (the ControlNet guidance window reads it).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

Model = Callable[[Any, float], Any]
Noise = Callable[[float, float], Any]
Step = Callable[[int], None]


def _none(i: int) -> None:
    return None


def _silent(sigma: float, sigma_next: float) -> Any:
    raise AssertionError("a deterministic sampler drew noise")


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): where the deterministic step lands and how much fresh noise brings it to sigma_to."""
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * math.sqrt(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2))
    return math.sqrt(sigma_to ** 2 - up ** 2), up


def _ancestral(model: Model, x: Any, sigmas: np.ndarray, noise: Noise, step: Step, eta: float, s_noise: float,
               move: Callable[[Any, Any, float, float], Any]) -> Any:
    """The single-step walk: per step one model call, the deterministic `move(x, denoised, s, s_down)` to where the
    ancestral step lands (an Euler step when that is 0), then fresh noise up to the next sigma (eta 0: none)."""
    for i in range(len(sigmas) - 1):
        s, s1 = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, s)
        down, up = ancestral_step(s, s1, eta)
        step(i)
        x = x + (x - denoised) / s * (down - s) if down == 0 else move(x, denoised, s, down)
        if s1 > 0 and up:
            x = x + noise(s, s1) * s_noise * up
    return x


def _euler_move(x: Any, denoised: Any, s: float, down: float) -> Any:
    return x + (x - denoised) / s * (down - s)


def euler_ancestral(model: Model, x: Any, sigmas: np.ndarray, *, noise: Noise, step: Step = _none, eta: float = 1.0,
                    s_noise: float = 1.0, **_: Any) -> Any:
    return _ancestral(model, x, sigmas, noise, step, eta, s_noise, _euler_move)


def euler(model: Model, x: Any, sigmas: np.ndarray, *, step: Step = _none, **_: Any) -> Any:
    """Euler steps: the ancestral step with no fresh noise lands on the next sigma."""
    return _ancestral(model, x, sigmas, _silent, step, 0.0, 1.0, _euler_move)


def heun(model: Model, x: Any, sigmas: np.ndarray, *, step: Step = _none, **_: Any) -> Any:
    def move(x: Any, denoised: Any, s: float, s1: float) -> Any:
        d = (x - denoised) / s
        x2 = x + d * (s1 - s)
        return x + (d + (x2 - model(x2, s1)) / s1) / 2 * (s1 - s)

    return _ancestral(model, x, sigmas, _silent, step, 0.0, 1.0, move)


def _log_mid(a: float, b: float) -> float:
    return math.exp((math.log(a) + math.log(b)) / 2)


def _dpm_2_move(model: Model) -> Callable[[Any, Any, float, float], Any]:
    def move(x: Any, denoised: Any, s: float, down: float) -> Any:
        mid = _log_mid(s, down)
        x2 = x + (x - denoised) / s * (mid - s)
        return x + (x2 - model(x2, mid)) / mid * (down - s)

    return move


def dpm_2_ancestral(model: Model, x: Any, sigmas: np.ndarray, *, noise: Noise, step: Step = _none, eta: float = 1.0,
                    s_noise: float = 1.0, **_: Any) -> Any:
    return _ancestral(model, x, sigmas, noise, step, eta, s_noise, _dpm_2_move(model))


def dpm_2(model: Model, x: Any, sigmas: np.ndarray, *, step: Step = _none, **_: Any) -> Any:
    """DPM-Solver-2 steps (a midpoint in log sigma), no fresh noise."""
    return _ancestral(model, x, sigmas, _silent, step, 0.0, 1.0, _dpm_2_move(model))


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """∫ from t[i] to t[i+1] of the Lagrange basis polynomial of node t[i-j] over nodes t[i], …, t[i-order+1]."""
    nodes = [float(t[i - k]) for k in range(order)]
    poly = np.poly1d([1.0])
    for k, node in enumerate(nodes):
        if k != j:
            poly = poly * np.poly1d([1.0, -node]) / (nodes[j] - node)
    antiderivative = poly.integ()
    return float(antiderivative(float(t[i + 1])) - antiderivative(float(t[i])))


def lms(model: Model, x: Any, sigmas: np.ndarray, *, step: Step = _none, order: int = 4, **_: Any) -> Any:
    ds: list[Any] = []
    for i in range(len(sigmas) - 1):
        s = float(sigmas[i])
        ds.append((x - model(x, s)) / s)
        ds = ds[-order:]
        step(i)
        current = min(i + 1, order)
        coeffs = [lms_coefficient(current, sigmas, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


def dpmpp_2s_ancestral(model: Model, x: Any, sigmas: np.ndarray, *, noise: Noise, step: Step = _none, eta: float = 1.0,
                       s_noise: float = 1.0, **_: Any) -> Any:
    def move(x: Any, denoised: Any, s: float, down: float) -> Any:
        h = math.log(s) - math.log(down)  # in t = -log sigma
        mid = math.exp(-(-math.log(s) + h / 2))
        x2 = (mid / s) * x - math.expm1(-h / 2) * denoised
        return (down / s) * x - math.expm1(-h) * model(x2, mid)

    return _ancestral(model, x, sigmas, noise, step, eta, s_noise, move)


def _sde_queries(s: float, s1: float, r: float) -> tuple[float, float, float]:
    """sigma(t), sigma(t + r·h), sigma(t_next) computed in float32 from t = -log sigma, as DPM++ SDE asks the
    Brownian tree for them (the tree is rough: a one-ulp different query is a different draw)."""
    import torch

    t, t_next = -torch.tensor(s, dtype=torch.float32).log(), -torch.tensor(s1, dtype=torch.float32).log()
    mid = t + (t_next - t) * r
    return float(t.neg().exp()), float(mid.neg().exp()), float(t_next.neg().exp())


def dpmpp_sde(model: Model, x: Any, sigmas: np.ndarray, *, noise: Noise, step: Step = _none, eta: float = 1.0,
              s_noise: float = 1.0, r: float = 0.5, **_: Any) -> Any:
    for i in range(len(sigmas) - 1):
        s, s1 = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, s)
        step(i)
        if s1 == 0:
            x = x + (x - denoised) / s * (s1 - s)
            continue
        # the noise-query sigmas as float32 round trips through t = -log sigma, where k-diffusion takes them
        q, q_mid, q_next = _sde_queries(s, s1, r)
        t = -math.log(s)
        s_mid = q_mid
        fac = 1 / (2 * r)
        down, up = ancestral_step(s, s_mid, eta)
        x2 = (down / s) * x - math.expm1(t + math.log(down)) * denoised
        x2 = x2 + noise(q, q_mid) * s_noise * up
        denoised2 = model(x2, s_mid)
        down, up = ancestral_step(s, s1, eta)
        mixed = (1 - fac) * denoised + fac * denoised2
        x = (down / s) * x - math.expm1(t + math.log(down)) * mixed
        x = x + noise(q, q_next) * s_noise * up
    return x


def _multistep(model: Model, x: Any, sigmas: np.ndarray, step: Step,
               update: Callable[[Any, Any, float, float, float, list[tuple[Any, float]]], Any]) -> Any:
    """The DPM++ multistep walk: one model call per step, `update(x, denoised, s, s1, h, past)` with the earlier
    steps' (denoised, h) newest last; the last step (to sigma 0) returns the denoised latent."""
    past: list[tuple[Any, float]] = []
    for i in range(len(sigmas) - 1):
        s, s1 = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, s)
        step(i)
        if s1 == 0:
            return denoised
        h = math.log(s) - math.log(s1)
        x = update(x, denoised, s, s1, h, past)
        past.append((denoised, h))
    return x


def dpmpp_2m_sde(model: Model, x: Any, sigmas: np.ndarray, *, noise: Noise, step: Step = _none, eta: float = 1.0,
                 s_noise: float = 1.0, solver_type: str = "midpoint", **_: Any) -> Any:
    def update(x: Any, denoised: Any, s: float, s1: float, h: float, past: list[tuple[Any, float]]) -> Any:
        eta_h = eta * h
        decay = -math.expm1(-h - eta_h)
        x = s1 / s * math.exp(-eta_h) * x + decay * denoised
        if past:
            old, h_last = past[-1]
            weight = decay / (-h - eta_h) + 1 if solver_type == "heun" else 0.5 * decay
            x = x + weight * (h / h_last) * (denoised - old)
        if eta:
            x = x + noise(s, s1) * s1 * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
        return x

    return _multistep(model, x, sigmas, step, update)


def dpmpp_2m(model: Model, x: Any, sigmas: np.ndarray, *, step: Step = _none, **_: Any) -> Any:
    """DPM-Solver++(2M): the 2M SDE step without noise (its midpoint correction is 2M's second-order term)."""
    return dpmpp_2m_sde(model, x, sigmas, noise=_silent, step=step, eta=0.0)


def dpmpp_3m_sde(model: Model, x: Any, sigmas: np.ndarray, *, noise: Noise, step: Step = _none, eta: float = 1.0,
                 s_noise: float = 1.0, **_: Any) -> Any:
    def update(x: Any, denoised: Any, s: float, s1: float, h: float, past: list[tuple[Any, float]]) -> Any:
        h_eta = h * (eta + 1)
        x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if len(past) >= 2:
            (d_1, h_1), (d_2, h_2) = past[-1], past[-2]
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - d_1) / r0
            d1_1 = (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif past:
            d_1, h_1 = past[-1]
            x = x + phi_2 * (denoised - d_1) / (h_1 / h)
        if eta:
            x = x + noise(s, s1) * s1 * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        return x

    return _multistep(model, x, sigmas, step, update)


# ---------------------------------------------------------------- DPM-Solver fast / adaptive (in t = -log sigma)
class _Solver:
    """DPM-Solver-1/2/3 steps in t = -log sigma over a denoiser, with the per-step noise-prediction cache."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def eps(self, cache: dict[str, Any], key: str, x: Any, t: float) -> Any:
        if key not in cache:
            sigma = math.exp(-t)
            cache[key] = (x - self.model(x, sigma)) / sigma
        return cache[key]

    def step1(self, x: Any, t: float, t_next: float, cache: dict[str, Any]) -> Any:
        return x - math.exp(-t_next) * math.expm1(t_next - t) * self.eps(cache, "eps", x, t)

    def step2(self, x: Any, t: float, t_next: float, cache: dict[str, Any], r1: float = 0.5) -> Any:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return (x - math.exp(-t_next) * math.expm1(h) * eps
                - math.exp(-t_next) / (2 * r1) * math.expm1(h) * (eps_r1 - eps))

    def step3(self, x: Any, t: float, t_next: float, cache: dict[str, Any], r1: float = 1 / 3,
              r2: float = 2 / 3) -> Any:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - math.exp(-s2) * math.expm1(r2 * h) * eps
              - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (x - math.exp(-t_next) * math.expm1(h) * eps
                - math.exp(-t_next) / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps))

    def ancestral(self, t: float, t_next: float, t_end: float, eta: float) -> tuple[float, float]:
        """Where the deterministic part lands (in t) and the noise that completes the step to t_next."""
        if not eta:
            return t_next, 0.0
        down, _ = ancestral_step(math.exp(-t), math.exp(-t_next), eta)
        landing = min(t_end, -math.log(down))
        return landing, math.sqrt(math.exp(-t_next) ** 2 - math.exp(-landing) ** 2)


def dpm_fast(model: Model, x: Any, sigma_min: float, sigma_max: float, n: int, *, noise: Noise, step: Step = _none,
             eta: float = 1.0, s_noise: float = 1.0, **_: Any) -> Any:
    """DPM-Solver-fast: n model calls spent as order-3 steps evenly spaced in t, ending with a lower order."""
    solver = _Solver(model)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = n // 3 + 1
    ts = np.linspace(t_start, t_end, m + 1)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        t, t_next = float(ts[i]), float(ts[i + 1])
        landing, up = solver.ancestral(t, t_next, t_end, eta)
        cache: dict[str, Any] = {}
        solver.eps(cache, "eps", x, t)
        step(i)
        x = (solver.step1, solver.step2, solver.step3)[order - 1](x, t, landing, cache)
        x = x + up * s_noise * noise(math.exp(-t), math.exp(-t_next)) if up else x
    return x


def dpm_adaptive(model: Model, x: Any, sigma_min: float, sigma_max: float, *, noise: Noise, step: Step = _none,
                 eta: float = 1.0, s_noise: float = 1.0, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                 accept_safety: float = 0.81, **_: Any) -> Any:
    """DPM-Solver-23 with an integral step-size controller: order-2 and order-3 results compared each try, the step
    accepted when their scaled difference allows (k-diffusion's defaults; order 1.5 for the controller with eta)."""
    import torch

    solver = _Solver(model)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    exponent = 1 / (1.5 if eta else 3)
    h, errs = h_init, None
    s, x_prev, tries = t_start, x, 0
    while s < t_end - 1e-5:
        t = min(t_end, s + h)
        landing, up = solver.ancestral(s, t, t_end, eta)
        cache: dict[str, Any] = {}
        solver.eps(cache, "eps", x, s)
        x_low = solver.step2(x, s, landing, cache, r1=1 / 3)
        x_high = solver.step3(x, s, landing, cache)
        delta = torch.maximum(torch.tensor(atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        inverse = 1 / (error + 1e-8)
        errs = errs or [inverse] * 3
        errs[0] = inverse
        factor = 1 + math.atan(errs[0] ** exponent - 1)
        if factor >= accept_safety:
            errs[2], errs[1] = errs[1], errs[0]
            x_prev = x_low
            x = x_high + up * s_noise * noise(math.exp(-s), math.exp(-t)) if up else x_high
            s = t
        h *= factor
        tries += 1
        step(tries - 1)
    return x


# ---------------------------------------------------------------- timestep samplers (VP latents, eps model)
def ddim(eps_model: Callable[[Any, int], Any], x: Any, timesteps: np.ndarray, alphas_cumprod: np.ndarray, *,
         step: Step = _none, **_: Any) -> Any:
    """WebUI's DDIM (eta 0) over ascending `timesteps`: len - 1 steps from the last down to the first timestep."""
    ac = alphas_cumprod.astype(np.float64)
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        a_t, a_prev = float(np.float32(ac[timesteps[index]])), float(ac[timesteps[index - 1]])
        e = eps_model(x, int(timesteps[index]))
        x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
        step(i)
    return x


def plms(eps_model: Callable[[Any, int], Any], x: Any, timesteps: np.ndarray, alphas_cumprod: np.ndarray, *,
         step: Step = _none, **_: Any) -> Any:
    """WebUI's PLMS: pseudo linear multistep on the noise prediction (orders 1-4), an improved-Euler first step."""
    ac = alphas_cumprod.astype(np.float64)
    old: list[Any] = []

    def advance(x: Any, e: Any, index: int) -> Any:
        a_t, a_prev = float(np.float32(ac[timesteps[index]])), float(ac[timesteps[index - 1]])
        x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e = eps_model(x, int(timesteps[index]))
        if not old:
            e_next = eps_model(advance(x, e, index), int(timesteps[max(index - 1, 0)]))
            e_prime = (e + e_next) / 2
        elif len(old) == 1:
            e_prime = (3 * e - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = advance(x, e_prime, index)
        old = (old + [e])[-3:]
        step(i)
    return x


def unipc(eps_model: Callable[[Any, float], Any], x: Any, times: np.ndarray, alphas_cumprod: np.ndarray, *,
          step: Step = _none, order: int = 3, variant: str = "bh1", **_: Any) -> Any:
    """UniPC (data prediction, B(h) variant, lower order at the end, no corrector on the last step) over continuous
    times `times` (from t_start down to 1/1000), the model seen at timestep (t - 1/1000)·1000 as WebUI feeds it."""
    import torch

    n_train = len(alphas_cumprod)
    grid = np.linspace(0.0, 1.0, n_train + 1)[1:]
    log_alpha_grid = 0.5 * np.log(alphas_cumprod.astype(np.float64))

    def log_alpha(t: float) -> float:
        return float(np.interp(t, grid, log_alpha_grid))

    def std(t: float) -> float:
        return math.sqrt(1 - math.exp(2 * log_alpha(t)))

    def lam(t: float) -> float:
        return log_alpha(t) - math.log(std(t))

    def data(x: Any, t: float) -> Any:
        e = eps_model(x, (t - 1 / n_train) * n_train)
        return (x - std(t) * e) / math.exp(log_alpha(t))

    def update(x: Any, models: list[Any], ts: list[float], t: float, k: int, correct: bool) -> tuple[Any, Any]:
        t0, m0 = ts[-1], models[-1]
        h = lam(t) - lam(t0)
        rks, d1s = [], []
        for i in range(1, k):
            rk = (lam(ts[-(i + 1)]) - lam(t0)) / h
            rks.append(rk)
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        b_h = hh if variant == "bh1" else math.expm1(hh)
        rows, b = [], []
        for i in range(1, k + 1):
            rows.append([r ** (i - 1) for r in rks])
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        R, bv = np.array(rows), np.array(b)
        alpha_t = math.exp(log_alpha(t))
        base = std(t) / std(t0) * x - alpha_t * h_phi_1 * m0
        if d1s:
            rhos_p = [0.5] if k == 2 else list(np.linalg.solve(R[:-1, :-1], bv[:-1]))
            x_t = base - alpha_t * b_h * sum(float(r) * d for r, d in zip(rhos_p, d1s))
        else:
            x_t = base
        if not correct:
            return x_t, None
        rhos_c = [0.5] if k == 1 else list(np.linalg.solve(R, bv))
        model_t = data(x_t, t)
        corr = sum(float(r) * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else torch.zeros_like(x)
        return base - alpha_t * b_h * (corr + float(rhos_c[-1]) * (model_t - m0)), model_t

    steps = len(times) - 1
    models, ts = [data(x, float(times[0]))], [float(times[0])]
    for k in range(1, order):
        x, m = update(x, models, ts, float(times[k]), k, True)
        step(k - 1)
        models.append(m)
        ts.append(float(times[k]))
    for i in range(order, steps + 1):
        k = min(order, steps + 1 - i)
        x, m = update(x, models, ts, float(times[i]), k, i != steps)
        step(i - 1)
        models, ts = models[1:] + [m], ts[1:] + [float(times[i])]
    return x


SIGMA_SAMPLERS: dict[str, Callable[..., Any]] = {
    "euler": euler, "euler_ancestral": euler_ancestral, "heun": heun, "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral, "lms": lms, "dpmpp_2s_ancestral": dpmpp_2s_ancestral, "dpmpp_sde": dpmpp_sde,
    "dpmpp_2m": dpmpp_2m, "dpmpp_2m_sde": dpmpp_2m_sde, "dpmpp_3m_sde": dpmpp_3m_sde,
}
RANGE_SAMPLERS: dict[str, Callable[..., Any]] = {"dpm_fast": dpm_fast, "dpm_adaptive": dpm_adaptive}
TIMESTEP_SAMPLERS: dict[str, Callable[..., Any]] = {"ddim": ddim, "plms": plms, "unipc": unipc}


class BrownianNoise:
    """SDE noise from torchsde's Brownian tree seeded with the image seed, over [sigma_min, sigma_max] of the full
    schedule (as WebUI builds it, so batch size never changes a picture): W(σ') − W(σ) / √|σ' − σ|."""

    def __init__(self, x: Any, sigma_min: float, sigma_max: float, seed: int) -> None:
        import torch
        import torchsde

        self.torch = torch
        t0, t1 = torch.tensor(sigma_min, dtype=torch.float32), torch.tensor(sigma_max, dtype=torch.float32)
        w0 = torch.zeros_like(x[0], device="cpu", dtype=torch.float32)
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, sigma: float, sigma_next: float) -> Any:
        import warnings

        torch = self.torch
        a, b = torch.tensor(sigma, dtype=torch.float32), torch.tensor(sigma_next, dtype=torch.float32)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        with warnings.catch_warnings():  # torchsde notes queries at the float32-rounded ends of its interval
            warnings.simplefilter("ignore", UserWarning)
            w = self.tree(lo, hi).unsqueeze(0) * sign  # the tree runs from sigma_min up; sampling runs down
        return (w / (b - a).abs().sqrt()).to(self.device, self.dtype)
