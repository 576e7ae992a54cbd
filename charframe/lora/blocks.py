"""Block weights: the 26 block ids (BASE, IN00…IN11, M00, OUT00…OUT11), presets, and their checks, per family.

Which block a module belongs to is part of the name contract (`keys.block_of`); modules outside
every block (conv_in, time_embedding, conv_out) keep weight 1, as in the WebUI tools. Every family's
blocks are a subset of the 26 ids (SDXL: BASE, IN00…IN08, M00, OUT00…OUT08), so a merge always takes 26
weights; which lengths a weight list may have, and the weight of the blocks a short form leaves out, are
the family's (`[[blocks]]` of `data/families/<id>.toml`: SD1.x 26 or 17, SDXL 20, 12 or 26, as the LoRA
Block Weight extension takes them). Presets are data (`charframe/data/block_presets.toml`: `[block_presets]`
for SD1.x, `[sdxl.block_presets]` for SDXL) that users extend in charframe.toml or their own files;
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
from charframe.families.family import Family, families, get_family
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


def expand_weights(weights: Sequence[float], family: str | Family | None = None) -> tuple[float, ...]:
    """26 weights from any of the family's forms (SD1.x: 26, or 17 whose missing blocks get 1; SDXL: 20, 12 or
    26, missing blocks 0 as LoRA Block Weight's to26 gives them)."""
    fam = get_family(family)
    form = fam.block_form(len(weights))
    if form is not None:
        given = {b: checked_weight(w, f"the weight of {b}") for b, w in zip(form.ids, weights)}
        return tuple(given.get(b, form.fill) for b in BLOCK_IDS)
    lengths = _lengths(fam)
    other = next((f for f in families() if f.id != fam.id and f.block_form(len(weights))), None)
    also = f" ({len(weights)} is {other.name}'s form)" if other is not None else ""
    which = "" if fam.id == get_family().id else f" for {fam.name}"
    raise ValueError(f"{len(weights)} weights; a block-weight list{which} has {lengths}{also}")


def parse_weights(text: str) -> list[float]:
    """'0,1,0.5,…' → floats (spaces allowed)."""
    return [float(part) for part in text.replace(" ", "").split(",") if part != ""]


def _table(data: Mapping, path: str) -> object:
    """`data["a"]["b"]` for the dotted `path` "a.b" ({} where a level is missing)."""
    for part in path.split("."):
        data = data.get(part, {}) if isinstance(data, Mapping) else {}
    return data


def _presets_from(data: Mapping, source: str, family: str | Family | None = None) -> dict[str, tuple[float, ...]]:
    fam = get_family(family)
    table = _table(data, fam.presets_table)
    if not isinstance(table, Mapping):
        raise CharframeError(f"{source}: [{fam.presets_table}] must be a table of NAME = [weights]")
    out = {}
    for name, value in table.items():
        if not PRESET_NAME.match(str(name)) or name_problem(str(name)):
            raise CharframeError(
                f"{source}: preset name '{name}' cannot be part of a file name; use letters, digits, '_', "
                "'-', '.' or '+' (up to 64, starting with a letter or digit)"
            )
        try:
            weights = parse_weights(value) if isinstance(value, str) else [float(v) for v in value]
            out[str(name).upper()] = expand_weights(weights, fam)
        except (TypeError, ValueError) as e:
            raise CharframeError(f"{source}: preset {name}: {e} ({_forms_hint(fam)})") from None
    return out


def _lengths(fam: Family) -> str:
    """"26 or 17", "20, 12 or 26": the lengths a family's weight lists may have."""
    sizes = [str(len(f.ids)) for f in fam.block_forms]
    return " or ".join(sizes) if len(sizes) < 3 else ", ".join(sizes[:-1]) + " or " + sizes[-1]


def _forms_hint(fam: Family) -> str:
    """"give 26 weights BASE,IN00…IN11,M00,OUT00…OUT11 or the 17-weight form" (and SDXL's alike)."""
    first, *rest = fam.block_forms
    return f"give {len(first.ids)} weights {_span(first.ids)}" + "".join(f" or the {len(f.ids)}-weight form" for f in rest)


def _span(ids: Sequence[str]) -> str:
    """BASE,IN00…IN11,M00,OUT00…OUT11 for a contiguous form; the ids themselves otherwise."""
    ins = [i for i in ids if i.startswith("IN")]
    outs = [i for i in ids if i.startswith("OUT")]
    contiguous = all(int(x[-2:]) == k for group in (ins, outs) for k, x in enumerate(group))
    if contiguous and ins and outs:
        return f"BASE,{ins[0]}…{ins[-1]},M00,{outs[0]}…{outs[-1]}"
    return ",".join(ids)


@functools.lru_cache(maxsize=None)
def _shipped_presets(family: str) -> dict[str, tuple[float, ...]]:
    """A family's presets charframe ships (read once: a rerun of fifty characters asks for them per stage)."""
    return _presets_from(tomlio.load(PRESETS_FILE), str(PRESETS_FILE), family)


def load_presets(
    files: Iterable[str | os.PathLike] = (), project_config: Mapping | None = None, project_file: str = PROJECT_FILE,
    family: str | Family | None = None,
) -> dict[str, tuple[float, ...]]:
    """A family's presets: shipped, then the project's (`[block_presets]`, `[sdxl.block_presets]`), then each
    file's (later ones win)."""
    presets = dict(_shipped_presets(get_family(family).id))
    if project_config:
        presets.update(_presets_from(project_config, project_file, family))
    for f in files:
        if not Path(f).is_file():
            what = "is a folder, not a presets file" if Path(f).is_dir() else "presets file not found"
            raise CharframeError(f"{f}: {what}")
        presets.update(_presets_from(tomlio.load(f), str(f), family))
    return presets


def resolve_preset(
    spec: str, presets: Mapping[str, Sequence[float]], family: str | Family | None = None
) -> tuple[str, tuple[float, ...]]:
    """(label, 26 weights) for a preset name (case-insensitive) or a comma-separated weight list of a family."""
    fam = get_family(family)
    lengths = _lengths(fam)
    spec = spec.strip()
    if "," in spec:
        try:
            weights = expand_weights(parse_weights(spec), fam)
        except ValueError as e:
            first, *rest = fam.block_forms
            forms = f"{len(first.ids)} weights ({_span(first.ids).replace(',', ', ')})" + "".join(
                f" or {len(f.ids)} ({_span(f.ids).replace(',', ', ')})" for f in rest)
            raise CharframeError(
                f"{{param}}: bad weight list '{spec}': {e}. Give {forms}, or a preset: {', '.join(presets)}",
                param="preset",
            ) from None
        return custom_label(weights), weights
    key = spec.upper()
    if key not in presets:
        raise CharframeError(
            f"{{param}}: unknown preset '{spec}'{'' if fam.id == get_family().id else f' for {fam.name} LoRAs'}; "
            f"known presets: {', '.join(presets)}; or give {lengths} comma-separated weights",
            param="preset",
        )
    return key, tuple(presets[key])


def resolve_weights(
    spec: str, project_root: str | os.PathLike | None = None, preset_files: Iterable[str | os.PathLike] = (),
    family: str | Family | None = None,
) -> tuple[str, tuple[float, ...]]:
    """(label, 26 checked weights) for a preset name or weight list of a family (SD1.x by default), as merge and
    demo take it.

    Presets: the shipped ones, then the family's table of the project's charframe.toml (when
    `project_root` is given), then each of `preset_files` (later ones win).
    """
    config = load_project_config(project_root) if project_root is not None else None
    where = str(Path(project_root) / PROJECT_FILE) if project_root is not None else PROJECT_FILE
    try:
        return resolve_preset(spec, load_presets(preset_files, config, where, family), family)
    except CharframeError as e:
        fam = get_family(family)
        owner = next((f for f in families() if f.id != fam.id and "," not in spec
                      and spec.strip().upper() in load_presets(preset_files, config, where, f)), None)
        if owner is None:
            raise
        raise CharframeError(f"{e.template} ('{spec}' is an {owner.name} preset; this is an {fam.name} LoRA)",
                             param=e.param) from None


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
