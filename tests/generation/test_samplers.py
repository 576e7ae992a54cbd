"""Samplers equal to WebUI's: names read the way WebUI 1.10 reads them, every sigma schedule equal to the one
WebUI/k-diffusion compute (recorded by running their code on the SD1.5 schedule, tests/data/webui_samplers.json.gz),
and every sampler's result on a toy noise model equal to WebUI's run (same model calls, same noise), txt2img and
the hires img2img pass."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from charframe.errors import CharframeError
from charframe.generation.passes import img2img_split, sample_latent
from charframe.generation.samplers import check_available, find_sampler, samplers
from charframe.generation.schedules import ModelSchedule, alphas_cumprod, sigma_schedule, timestep_sigmas
from charframe.models.single_file import sd15_config

DATA = json.loads(gzip.open(Path(__file__).parents[1] / "data" / "webui_samplers.json.gz", "rt").read())
SD15 = ModelSchedule(alphas_cumprod(sd15_config().scheduler))
TIMESTEP = ("DDIM", "PLMS", "UniPC")
HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None


def _choice(sampler: str, schedule: str):
    return find_sampler(sampler, schedule="" if sampler in TIMESTEP else schedule)


def test_model_sigmas_are_sd15s() -> None:
    assert SD15.sigma_min == pytest.approx(DATA["model_sigmas"]["first"], rel=1e-6)
    assert SD15.sigma_max == pytest.approx(DATA["model_sigmas"]["last"], rel=1e-6)


@pytest.mark.parametrize("steps", [20, 28])
def test_every_sigma_schedule_equals_webuis(steps: int) -> None:
    """Every WebUI sampler × every schedule type (and DDIM/PLMS/UniPC's own timesteps), 1e-4 relative."""
    cases = [s for s in DATA["schedules"] if s["steps"] == steps]
    assert len(cases) == 14 * 12 + 3
    for case in cases:
        choice = _choice(case["sampler"], case["schedule"])
        got = sigma_schedule(choice, steps, SD15) if choice.schedule else timestep_sigmas(choice, steps, SD15)
        want = np.array(case["sigmas"])
        assert got.shape == want.shape, case["sampler"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=f"{case['sampler']} {case['schedule']}")


def test_the_schedule_type_webui_writes() -> None:
    """WebUI writes the schedule a sampler ran on (`Schedule type: Karras` for DPM++ 2M, Automatic for Euler a)."""
    for case in DATA["schedules"]:
        if case["sampler"] in TIMESTEP:
            continue
        written = _choice(case["sampler"], case["schedule"]).infotext_fields()["Schedule type"]
        assert written == (case["infotext_schedule"] or "Automatic"), (case["sampler"], case["schedule"])


def test_names_read_as_webui_reads_them() -> None:
    """Combined names (`DPM++ 2M Karras`, `Euler a Exponential`) → sampler + schedule type, as WebUI 1.10's
    get_sampler_and_scheduler reads a PNG without a Schedule type field (Automatic = the sampler's default)."""
    checked = 0
    for name, (sampler, schedule) in DATA["names"].items():
        if "SGM Uniform" in name:  # WebUI cuts " Uniform" first and loses the sampler; charframe takes the longest
            assert _choice(name, "").schedule.label == "SGM Uniform"
            continue
        choice = find_sampler(name)
        want = find_sampler(sampler, schedule="" if schedule == "Automatic" else schedule)
        assert (choice.name, choice.schedule) == (want.name, want.schedule), name
        checked += 1
    assert checked >= 150


@pytest.mark.parametrize("alias,name,schedule", [
    ("k_dpmpp_2m_ka", "DPM++ 2M", "Karras"), ("k_euler_a", "Euler a", "Uniform"), ("dpmpp_2m_sde_karras",
     "DPM++ 2M SDE", "Karras"), ("DPM++ 2S a Karras", "DPM++ 2S a", "Karras"), ("k_dpm_fast", "DPM fast", "Uniform"),
    ("k_dpm_ad", "DPM adaptive", "Uniform"), ("dpm++ 2m", "DPM++ 2M", "Karras"), ("DPM++ 2M", "DPM++ 2M", "Karras"),
    ("k_dpmpp_3m_sde_exp", "DPM++ 3M SDE", "Exponential"), ("euler a karras", "Euler a", "Karras"),
])
def test_aliases(alias: str, name: str, schedule: str) -> None:
    choice = find_sampler(alias)
    assert (choice.name, choice.schedule.label) == (name, schedule)


def test_unknown_and_unavailable_names() -> None:
    with pytest.raises(CharframeError) as err:
        find_sampler("DPM++ 9M Turbo", "krnk.toml: generation.sampler")
    msg = str(err.value)
    assert msg.startswith("krnk.toml: generation.sampler: unknown sampler 'DPM++ 9M Turbo'")
    assert "Euler a" in msg and "DPM fast" in msg and "UniPC" in msg and "Restart" not in msg
    with pytest.raises(CharframeError, match="WebUI's sampler 'Restart' is not available in charframe"):
        find_sampler("Restart")
    with pytest.raises(CharframeError, match="DDIM runs on the model's timesteps and takes no schedule type"):
        find_sampler("DDIM Karras")


def test_every_usable_sampler_is_checked_for_its_package() -> None:
    for s in samplers():
        if not s.function:
            continue
        choice = find_sampler(s.name)
        if s.brownian_noise and not HAS_TORCHSDE:
            with pytest.raises(CharframeError, match="pip install torchsde"):
                check_available(choice)
        else:
            check_available(choice)


def _toy_eps(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.tanh(x) * (0.5 + float(t) / 2000.0) + 0.05 * x


class ToyDenoiser:
    """The recorded runs' model: eps(x, t) = tanh(x)·(0.5 + t/2000) + 0.05·x, behind k-diffusion's discrete eps
    denoiser (sigma → fractional timestep in log space) or at a model timestep (DDIM/PLMS/UniPC)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.steps: list[int] = []

    def set_sampling_step(self, i: int) -> None:
        self.steps.append(i)

    def k(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls.append(sigma)
        return x - _toy_eps(x / (sigma ** 2 + 1) ** 0.5, float(SD15.sigma_to_t(sigma))) * sigma

    def vp(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.calls.append(t)
        return _toy_eps(x, t)


RUNS = [r for r in DATA["runs"]]


@pytest.mark.parametrize("run", RUNS, ids=[f"{r['sampler']}-{r['schedule']}-{r['steps']}{'-img2img' if r['img2img'] else ''}"
                                           for r in RUNS])
def test_sampler_runs_equal_webuis(run: dict) -> None:
    choice = _choice(run["sampler"], run["schedule"])
    if choice.sampler.brownian_noise and not HAS_TORCHSDE:
        pytest.skip("torchsde not installed")
    generator = torch.Generator("cpu").manual_seed(1234)
    randn = lambda: torch.randn((1, 4, 6, 5), generator=generator)  # noqa: E731
    den = ToyDenoiser()
    init = torch.linspace(-1, 1, 120).reshape(1, 4, 6, 5) if run["img2img"] else None
    x = sample_latent(choice, run["steps"], SD15, den, randn(), randn, 1234, init, 0.45)
    assert len(den.calls) == len(run["calls"])  # the same number of model calls, at the same noise levels
    np.testing.assert_allclose(den.calls, run["calls"], rtol=1e-4)
    want = torch.tensor(run["x"]).reshape(1, 4, 6, 5)
    torch.testing.assert_close(x, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M", "Heun", "DPM2", "DDIM", "UniPC", "DPM fast", "LMS"])
@pytest.mark.parametrize("steps,denoise", [(10, 0.45), (20, 0.7), (7, 0.3)])
def test_hires_pass_runs_exactly_the_steps_asked_for(name: str, steps: int, denoise: float) -> None:
    """WebUI's hires pass: `steps` denoising steps whatever the denoise (diffusers' img2img would run
    int(steps × denoise)); second-order samplers call the model twice per step but the last, DDIM one step less
    (WebUI noises to its t_enc and starts one timestep lower)."""
    choice = find_sampler(name)
    generator = torch.Generator("cpu").manual_seed(0)
    randn = lambda: torch.randn((1, 4, 4, 4), generator=generator)  # noqa: E731
    den = ToyDenoiser()
    sample_latent(choice, steps, SD15, den, randn(), randn, 0, torch.zeros(1, 4, 4, 4), denoise)
    per_step = {"Heun": 2, "DPM2": 2}.get(name, 1)
    expected = {"DDIM": steps - 2, "UniPC": steps - 1}.get(name, steps * per_step - (per_step - 1))
    assert len(den.calls) == expected
    assert img2img_split(steps, denoise) == (int(steps / denoise), steps)
    if choice.schedule is not None and name != "DPM fast":
        full = sigma_schedule(choice, int(steps / denoise), SD15)
        assert den.calls[0] == pytest.approx(full[int(steps / denoise) - steps])  # starts `steps` from the end
