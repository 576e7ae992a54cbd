"""WebUI sampler names (`Euler a`, `DPM++ 2M Karras`, `k_dpmpp_2m_ka`, …) → a sampler and a schedule type, from
`data/samplers.toml`, read the way WebUI 1.9+ reads them.

WebUI 1.9 split the old combined names into a sampler and a "Schedule type". A name without a schedule means
"Automatic": the sampler's own default schedule (Karras for `DPM++ 2M`, Exponential for `DPM++ 2M SDE`, the
model's uniform schedule for `Euler a`), so `DPM++ 2M` and `DPM++ 2M Karras` are the same thing, as in WebUI.
`infotext_fields` writes what WebUI writes: `Sampler: DPM++ 2M, Schedule type: Karras`.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field

from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

SAMPLERS_FILE = DATA_DIR / "samplers.toml"
AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Sampler:
    name: str
    function: str
    aliases: tuple[str, ...] = ()
    schedule: str = ""  # what "Automatic" means ("" = the model's uniform schedule)
    kind: str = "sigmas"  # "sigmas", "range" (DPM fast/adaptive) or "timesteps" (DDIM, PLMS, UniPC)
    discard_penultimate: bool = False
    second_order: bool = False
    brownian_noise: bool = False
    solver_type: str = "midpoint"
    requires: tuple[str, ...] = field(default=())

    def total_steps(self, steps: int) -> int:
        """The step count prompt-editing schedules use: WebUI doubles it for second-order samplers."""
        return steps * 2 if self.second_order else steps


@dataclass(frozen=True)
class Schedule:
    name: str
    label: str
    aliases: tuple[str, ...] = ()
    rho: float | None = None


@dataclass(frozen=True)
class Choice:
    """A sampler with the schedule it runs on (`schedule` is never "automatic": that is resolved here)."""

    sampler: Sampler
    schedule: Schedule | None  # None for the timestep samplers (DDIM, PLMS, UniPC), which have no schedule type
    automatic: bool = True  # the schedule is the sampler's default (no schedule type was named)

    @property
    def name(self) -> str:
        return self.sampler.name

    def infotext_fields(self) -> dict[str, str]:
        """`Sampler` and `Schedule type` as WebUI 1.10 writes them (a sampler's default schedule is named too)."""
        plain = self.schedule is None or (self.automatic and not self.sampler.schedule)
        return {"Sampler": self.sampler.name, "Schedule type": "Automatic" if plain else self.schedule.label}


@functools.lru_cache(maxsize=1)
def _table() -> tuple[tuple[Sampler, ...], dict[str, str], tuple[Schedule, ...]]:
    data = tomlio.load(SAMPLERS_FILE)
    samplers = tuple(
        Sampler(s["name"], s["function"], tuple(s.get("aliases", ())), s.get("schedule", ""), s.get("kind", "sigmas"),
                bool(s.get("discard_penultimate", False)), bool(s.get("second_order", False)),
                bool(s.get("brownian_noise", False)), s.get("solver_type", "midpoint"),
                ("torchsde",) if s.get("brownian_noise") else ())
        for s in data["sampler"]
    )
    schedules = tuple(Schedule(s["name"], s["label"], tuple(s.get("aliases", ())), s.get("rho"))
                      for s in data["schedule"])
    return samplers, dict(data.get("alias", {})), schedules


def samplers() -> tuple[Sampler, ...]:
    """The shipped sampler table, in WebUI's order."""
    return _table()[0]


def schedules() -> tuple[Schedule, ...]:
    """WebUI's schedule types, Automatic first."""
    return _table()[2]


def find_schedule(name: str, where: str = "schedule") -> Schedule:
    """A schedule type by name or label (any case)."""
    key = name.strip().casefold()
    for s in schedules():
        if key in (n.casefold() for n in (s.name, s.label, *s.aliases)):
            return s
    raise CharframeError(f"{where}: unknown schedule type {name!r}; known: {', '.join(s.label for s in schedules())}")


def _lookup(name: str) -> Sampler | None:
    key = name.strip().casefold()
    return next((s for s in samplers() if key in (n.casefold() for n in (s.name, *s.aliases))), None)


def _split(name: str) -> tuple[Sampler | None, Schedule | None]:
    """The sampler and the schedule suffix of a combined name (`DPM++ 2M SDE Karras`), longest suffix first."""
    text = _table()[1].get(name.strip(), name.strip())
    found = _lookup(text)
    if found is not None:
        return found, None
    suffixes = sorted(((n, s) for s in schedules() for n in (s.label, s.name, *s.aliases)), key=lambda p: -len(p[0]))
    for suffix, schedule in suffixes:
        if text.casefold().endswith(" " + suffix.casefold()):
            return _lookup(text[: -len(suffix) - 1]), schedule
    return None, None


def find_sampler(name: str, where: str = "sampler", schedule: str = "") -> Choice:
    """The sampler called `name` (any case; WebUI name, combined `<sampler> <schedule>` name or alias) with its
    schedule: `schedule` (a schedule type name) overrides the name's; neither = the sampler's Automatic schedule.
    `where` names the setting in messages (e.g. "Characters/krnk.toml: generation.sampler")."""
    sampler, suffix = _split(name)
    if sampler is None:
        known = ", ".join(s.name for s in samplers() if s.function)
        raise CharframeError(f"{where}: unknown sampler {name!r}; known: {known} (each may end in a schedule type "
                             f"such as Karras or Exponential)")
    if not sampler.function:
        raise CharframeError(f"{where}: WebUI's sampler {sampler.name!r} is not available in charframe; choose another, "
                             "such as 'DPM++ 2M' or 'Euler a'")
    chosen = find_schedule(schedule, where) if schedule else suffix
    if sampler.kind == "timesteps":
        if chosen is not None and chosen.name != AUTOMATIC:
            raise CharframeError(f"{where}: {sampler.name} runs on the model's timesteps and takes no schedule type "
                                 f"({chosen.label}); drop it")
        return Choice(sampler, None)
    if chosen is None or chosen.name == AUTOMATIC:
        return Choice(sampler, find_schedule(sampler.schedule or "uniform"))
    return Choice(sampler, chosen, automatic=False)


def check_available(choice: Choice, where: str = "sampler") -> None:
    """A sampler whose Python package is missing is refused before any model loads."""
    for package in choice.sampler.requires:
        if importlib.util.find_spec(package) is None:
            raise CharframeError(
                f"{where}: sampler {choice.name!r} needs the Python package {package!r}, which is not installed "
                f"(pip install {package}); or choose another sampler such as 'DPM++ 2M'"
            )
