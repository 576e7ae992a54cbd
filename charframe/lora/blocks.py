"""Block weights: the 26 SD1.x blocks (BASE, IN00…IN11, M00, OUT00…OUT11), presets, and their checks.

Which block a module belongs to is part of the name contract (`keys.block_of`); modules outside
every block (conv_in, time_embedding, conv_out) keep weight 1, as in the WebUI tools. Presets are
data (`charframe/data/block_presets.toml`) that users extend in charframe.toml or their own files;
`resolve_weights` is the one place a preset name or weight list becomes 26 checked weights.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from charframe.errors import CharframeError
from charframe.lora.keys import block_of
from charframe.project import PROJECT_FILE, load_project_config
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR
from charframe.util.paths import name_problem

BLOCK_IDS: tuple[str, ...] = (
    "BASE",
    *(f"IN{i:02d}" for i in range(12)),
    "M00",
    *(f"OUT{i:02d}" for i in range(12)),
)
#: The 17-weight form: the blocks a plain (attention-only) LoRA has modules in.
BLOCK_IDS_17: tuple[str, ...] = (
    "BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
    *(f"OUT{i:02d}" for i in range(3, 12)),
)  # fmt: skip
PRESETS_FILE = DATA_DIR / "block_presets.toml"
PRESETS_TABLE = "block_presets"
#: Largest |weight| accepted for a block or a mixed input: far beyond any useful strength, small
#: enough that scaled fp16 factors stay finite.
WEIGHT_LIMIT = 100.0
#: A preset name becomes part of an output file name (`<stem>-<NAME>.safetensors`).
PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def checked_weight(value: float, what: str) -> float:
    """`value` as a float when finite and within ±WEIGHT_LIMIT, else ValueError naming `what`."""
    value = float(value)
    if not math.isfinite(value) or abs(value) > WEIGHT_LIMIT:
        raise ValueError(f"{what} is {value:g}; a weight must be a finite number from -{WEIGHT_LIMIT:g} to {WEIGHT_LIMIT:g}")
    return value


def expand_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """26 weights from 26, or from the 17-weight form (missing blocks get 1, like LoRA Block Weight)."""
    for ids in (BLOCK_IDS, BLOCK_IDS_17):
        if len(weights) == len(ids):
            given = {b: checked_weight(w, f"the weight of {b}") for b, w in zip(ids, weights)}
            return tuple(given.get(b, 1.0) for b in BLOCK_IDS)
    raise ValueError(f"{len(weights)} weights; a block-weight list has 26 or 17")


def parse_weights(text: str) -> list[float]:
    """'0,1,0.5,…' → floats (spaces allowed)."""
    return [float(part) for part in text.replace(" ", "").split(",") if part != ""]


def _presets_from(data: Mapping, source: str) -> dict[str, tuple[float, ...]]:
    table = data.get(PRESETS_TABLE, {})
    if not isinstance(table, Mapping):
        raise CharframeError(f"{source}: [{PRESETS_TABLE}] must be a table of NAME = [weights]")
    out = {}
    for name, value in table.items():
        if not PRESET_NAME.match(str(name)) or name_problem(str(name)):
            raise CharframeError(
                f"{source}: preset name '{name}' cannot be part of a file name; use letters, digits, '_', "
                "'-', '.' or '+' (up to 64, starting with a letter or digit)"
            )
        try:
            weights = parse_weights(value) if isinstance(value, str) else [float(v) for v in value]
            out[str(name).upper()] = expand_weights(weights)
        except (TypeError, ValueError) as e:
            raise CharframeError(
                f"{source}: preset {name}: {e} (give 26 weights BASE,IN00…IN11,M00,OUT00…OUT11 or the 17-weight form)"
            ) from None
    return out


@functools.lru_cache(maxsize=1)
def _shipped_presets() -> dict[str, tuple[float, ...]]:
    """The presets charframe ships (read once: a rerun of fifty characters asks for them per stage)."""
    return _presets_from(tomlio.load(PRESETS_FILE), str(PRESETS_FILE))


def load_presets(
    files: Iterable[str | os.PathLike] = (), project_config: Mapping | None = None, project_file: str = PROJECT_FILE
) -> dict[str, tuple[float, ...]]:
    """Shipped presets, then the project's `[block_presets]`, then each file's (later ones win)."""
    presets = dict(_shipped_presets())
    if project_config:
        presets.update(_presets_from(project_config, project_file))
    for f in files:
        if not Path(f).is_file():
            what = "is a folder, not a presets file" if Path(f).is_dir() else "presets file not found"
            raise CharframeError(f"{f}: {what}")
        presets.update(_presets_from(tomlio.load(f), str(f)))
    return presets


def resolve_preset(spec: str, presets: Mapping[str, Sequence[float]]) -> tuple[str, tuple[float, ...]]:
    """(label, 26 weights) for a preset name (case-insensitive) or a comma-separated weight list."""
    spec = spec.strip()
    if "," in spec:
        try:
            weights = expand_weights(parse_weights(spec))
        except ValueError as e:
            raise CharframeError(
                f"{{param}}: bad weight list '{spec}': {e}. Give 26 weights (BASE, IN00…IN11, M00, OUT00…OUT11) "
                f"or 17 ({', '.join(BLOCK_IDS_17)}), or a preset: {', '.join(presets)}",
                param="preset",
            ) from None
        return custom_label(weights), weights
    key = spec.upper()
    if key not in presets:
        raise CharframeError(
            f"{{param}}: unknown preset '{spec}'; known presets: {', '.join(presets)}; "
            "or give 26 or 17 comma-separated weights",
            param="preset",
        )
    return key, tuple(presets[key])


def resolve_weights(
    spec: str, project_root: str | os.PathLike | None = None, preset_files: Iterable[str | os.PathLike] = ()
) -> tuple[str, tuple[float, ...]]:
    """(label, 26 checked weights) for a preset name or weight list, as merge and demo take it.

    Presets: the shipped ones, then `[block_presets]` of the project's charframe.toml (when
    `project_root` is given), then each of `preset_files` (later ones win).
    """
    config = load_project_config(project_root) if project_root is not None else None
    where = str(Path(project_root) / PROJECT_FILE) if project_root is not None else PROJECT_FILE
    return resolve_preset(spec, load_presets(preset_files, config, where))


def custom_label(weights: Sequence[float]) -> str:
    """A short, stable file-name label for an ad-hoc weight list: LBW + 8 hex digits of its values."""
    text = ",".join(f"{w:g}" for w in weights)
    return "LBW" + hashlib.sha1(text.encode()).hexdigest()[:8]


def module_weights(names: Iterable[str], weights: Sequence[float]) -> tuple[dict[str, float], list[str]]:
    """Weight of each module from 26 block weights; modules outside every block get 1 (listed)."""
    by_block = dict(zip(BLOCK_IDS, weights))
    out, outside = {}, []
    for name in names:
        block = block_of(name)
        if block is None:
            outside.append(name)
        out[name] = 1.0 if block is None else by_block[block]
    return out, outside
