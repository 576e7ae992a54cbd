"""WebUI sampler names (`Euler a`, `DPM++ 2M Karras`, …) → diffusers schedulers, from `data/samplers.toml`."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

SAMPLERS_FILE = DATA_DIR / "samplers.toml"


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler: str
    config: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    requires: str = ""


@functools.lru_cache(maxsize=1)
def samplers() -> tuple[Sampler, ...]:
    """The shipped sampler table, in WebUI's order."""
    data = tomlio.load(SAMPLERS_FILE)
    return tuple(
        Sampler(s["name"], s["scheduler"], dict(s.get("config", {})), tuple(s.get("aliases", ())), s.get("requires", ""))
        for s in data["sampler"]
    )


def find_sampler(name: str, where: str = "sampler") -> Sampler:
    """The sampler called `name` (any case, WebUI name or alias); an unknown name lists the known ones.
    `where` names the setting in messages (e.g. "Characters/krnk.toml: generation.sampler")."""
    key = name.strip().casefold()
    for s in samplers():
        if key == s.name.casefold() or key in (a.casefold() for a in s.aliases):
            return s
    known = ", ".join(s.name for s in samplers())
    raise CharframeError(f"{where}: unknown sampler {name!r}; known: {known}")


def make_scheduler(name: str, base_config: Any, where: str = "sampler") -> Any:
    """A fresh diffusers scheduler for sampler `name` over the base model's noise schedule."""
    import diffusers

    s = find_sampler(name, where)
    if s.requires and importlib.util.find_spec(s.requires) is None:
        raise CharframeError(
            f"{where}: sampler {s.name!r} needs the Python package {s.requires!r}, which is not installed "
            f"(pip install {s.requires}); or choose another sampler such as 'DPM++ 2M Karras'"
        )
    cls = getattr(diffusers, s.scheduler)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    return cls.from_config(config | s.config)
