"""WebUI sampler names map to diffusers schedulers with the right flags; unknown names list the known ones."""

from __future__ import annotations

import importlib.util

import pytest

from charframe.errors import CharframeError
from charframe.generation.samplers import find_sampler, make_scheduler, samplers
from charframe.models.single_file import sd15_config

BASE = sd15_config().scheduler


@pytest.mark.parametrize("name,cls,flags", [
    ("Euler a", "EulerAncestralDiscreteScheduler", {}),
    ("euler", "EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++"}),
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "solver_order": 2}),
    ("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    ("DDIM", "DDIMScheduler", {}),
    ("UniPC", "UniPCMultistepScheduler", {}),
    ("Heun", "HeunDiscreteScheduler", {}),
    ("LMS", "LMSDiscreteScheduler", {}),
    ("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
])
def test_names_map_to_schedulers(name, cls, flags) -> None:
    sched = make_scheduler(name, BASE)
    assert type(sched).__name__ == cls
    for k, v in flags.items():
        assert sched.config[k] == v
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.beta_end == 0.012  # base schedule kept


def test_every_table_entry_builds_or_names_its_package() -> None:
    for s in samplers():
        if s.requires and importlib.util.find_spec(s.requires) is None:
            with pytest.raises(CharframeError, match=f"pip install {s.requires}"):
                make_scheduler(s.name, BASE)
        else:
            assert type(make_scheduler(s.name, BASE)).__name__ == s.scheduler


def test_unknown_sampler_lists_known_names() -> None:
    with pytest.raises(CharframeError) as err:
        find_sampler("DPM++ 9M Turbo", "krnk.toml: generation.sampler")
    msg = str(err.value)
    assert msg.startswith("krnk.toml: generation.sampler: unknown sampler 'DPM++ 9M Turbo'")
    assert "Euler a" in msg and "DPM++ 2M Karras" in msg and "UniPC" in msg
