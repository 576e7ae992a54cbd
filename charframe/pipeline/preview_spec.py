"""What a preview grid shows (prompts, seeds, size), without loading any model: the settings are part of the
preview step's manifest, so changing a scene in `[preview]` redraws the grids and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from charframe.character import Character
from charframe.project import PROJECT_FILE, SEEDS, load_project_config
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR
from charframe.util.schema import Source, limits, parse

DEFAULTS_FILE = DATA_DIR / "preview.toml"


@dataclass(frozen=True)
class PreviewSettings:
    scenes: tuple[str, ...] = field(metadata=limits(min_items=1))
    seeds: tuple[int, ...] = field(metadata=SEEDS)
    steps: int = field(default=20, metadata=limits(min=1, max=200))
    size: int = field(default=512, metadata=limits(min=32, max=2048))
    cfg: float = field(default=7.0, metadata=limits(min=1, max=30))
    tiny_steps: int = field(default=2, metadata=limits(min=1, max=200))
    tiny_size: int = field(default=64, metadata=limits(min=32, max=2048))
    #: LoRA strengths of the sweep columns (first scene, first seed); [] = no sweep
    strengths: tuple[float, ...] = field(default=(0.6, 0.8, 1.0), metadata=limits(min=-4, max=4))


def preview_settings(root: Path, tiny: bool) -> PreviewSettings:
    """Shipped defaults, then `[preview]` of the project's charframe.toml; with the tiny model, its small size."""
    data = tomlio.load(DEFAULTS_FILE) | dict(load_project_config(root).get("preview", {}))
    s = parse(PreviewSettings, data, Source(str(root / PROJECT_FILE)), ("preview",))
    return replace(s, steps=s.tiny_steps, size=s.tiny_size) if tiny else s


def character_text(members: tuple[tuple[Character, str], ...]) -> str:
    """`krnk, 1girl, short black hair, sailor uniform` (each member's keyword, prompt and outfit)."""
    parts = []
    for c, outfit in members:
        parts += [c.keyword, c.prompt] + ([c.outfits[outfit]] if outfit else [])
    return ", ".join(p for p in parts if p)


def prompts(members: tuple[tuple[Character, str], ...], settings: PreviewSettings) -> list[str]:
    """One prompt per scene: the character(s), then the scene."""
    base = character_text(members)
    return [f"{base}, {scene}" for scene in settings.scenes]
