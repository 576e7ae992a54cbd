"""The SD1.x block map (module name → BASE, IN00…IN11, M00, OUT00…OUT11) and block-weight presets.

The order and numbering are those of the original LDM UNet, which the WebUI block-weight tools use:
diffusers `down_blocks.i` resnets/attentions j are input block 3i+j+1 and its downsampler is 3i+3;
the mid block is M00; `up_blocks.i` resnets/attentions j are output block 3i+j and its upsampler is
3i+2; the text encoder is BASE. Old LDM-style names (`lora_unet_input_blocks_4_1_…`) map directly.
conv_in, time_embedding and conv_out belong to no block (the WebUI tools leave them at weight 1).
Presets are data (`charframe/data/block_presets.toml`) that users extend with their own files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from charframe.util import toml as tomlio
from charframe.errors import CharframeError
from charframe.util.files import DATA_DIR

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

_RULES: tuple[tuple[re.Pattern[str], object], ...] = (
    (re.compile(r"^lora_te\d*_"), lambda m: "BASE"),
    (re.compile(r"^lora_unet_down_blocks_(\d+)_(?:attentions|resnets)_(\d+)_"), lambda m: ("IN", 3 * m[1] + m[2] + 1)),
    (re.compile(r"^lora_unet_down_blocks_(\d+)_downsamplers_\d+_"), lambda m: ("IN", 3 * m[1] + 3)),
    (re.compile(r"^lora_unet_mid_block_"), lambda m: "M00"),
    (re.compile(r"^lora_unet_up_blocks_(\d+)_(?:attentions|resnets)_(\d+)_"), lambda m: ("OUT", 3 * m[1] + m[2])),
    (re.compile(r"^lora_unet_up_blocks_(\d+)_upsamplers_\d+_"), lambda m: ("OUT", 3 * m[1] + 2)),
    (re.compile(r"^lora_unet_input_blocks_(\d+)_"), lambda m: ("IN", m[1])),
    (re.compile(r"^lora_unet_middle_block_"), lambda m: "M00"),
    (re.compile(r"^lora_unet_output_blocks_(\d+)_"), lambda m: ("OUT", m[1])),
)


def block_of(module_name: str) -> str | None:
    """The 26-block id of a kohya module name, or None for modules outside every block."""
    for pattern, rule in _RULES:
        match = pattern.match(module_name)
        if match:
            found = rule([None, *map(int, match.groups())])
            if isinstance(found, str):
                return found
            prefix, index = found
            return f"{prefix}{index:02d}" if index < 12 else None
    return None


def expand_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """26 weights from 26, or from the 17-weight form (missing blocks get 1, like LoRA Block Weight)."""
    if len(weights) == len(BLOCK_IDS):
        return tuple(float(w) for w in weights)
    if len(weights) == len(BLOCK_IDS_17):
        given = dict(zip(BLOCK_IDS_17, weights))
        return tuple(float(given.get(b, 1.0)) for b in BLOCK_IDS)
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
        try:
            weights = parse_weights(value) if isinstance(value, str) else [float(v) for v in value]
            out[str(name).upper()] = expand_weights(weights)
        except (TypeError, ValueError) as e:
            raise CharframeError(
                f"{source}: preset {name}: {e} (give 26 weights BASE,IN00…IN11,M00,OUT00…OUT11 or the 17-weight form)"
            ) from None
    return out


def load_presets(
    files: Iterable[str | os.PathLike] = (), project_config: Mapping | None = None, project_file: str = "charframe.toml"
) -> dict[str, tuple[float, ...]]:
    """Shipped presets, then the project's `[block_presets]`, then each file's (later ones win)."""
    presets = _presets_from(tomlio.load(PRESETS_FILE), str(PRESETS_FILE))
    if project_config:
        presets.update(_presets_from(project_config, project_file))
    for f in files:
        if not Path(f).is_file():
            raise CharframeError(f"{f}: presets file not found")
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
                f"bad weight list '{spec}': {e}. Give 26 weights (BASE, IN00…IN11, M00, OUT00…OUT11) or 17 "
                f"({', '.join(BLOCK_IDS_17)}), or a preset: {', '.join(presets)}"
            ) from None
        return custom_label(weights), weights
    key = spec.upper()
    if key not in presets:
        raise CharframeError(
            f"unknown preset '{spec}'; known presets: {', '.join(presets)}; "
            "or give 26 or 17 comma-separated weights"
        )
    return key, tuple(presets[key])


def custom_label(weights: Sequence[float]) -> str:
    """A short, stable file-name label for an ad-hoc weight list: LBW + 8 hex digits of its values."""
    import hashlib

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


_CONV3 = re.compile(r"^lora_unet_(conv_in|conv_out|.*(_conv[12]?|_op|_in_layers_2|_out_layers_3))$")
_CONV1 = re.compile(r"^lora_unet_.*(_proj_in|_proj_out|_conv_shortcut|_skip_connection)$")


def layer_shape(module_name: str, flat: Sequence[int]) -> tuple[int, ...]:
    """The SD1.x layer weight shape of a flat out × (in·k·k) ΔW, from the module name.

    Needed only where a file stores a conv update flattened (LyCORIS LoHa without Tucker cores):
    resnet conv1/conv2, down/upsampler convs and conv_in/out are 3x3; proj_in/out and conv_shortcut
    are 1x1 convs in SD1.x; everything else is a linear layer.
    """
    if len(flat) != 2:
        return tuple(flat)
    out, inner = flat
    if _CONV3.search(module_name) and inner % 9 == 0:
        return (out, inner // 9, 3, 3)
    if _CONV1.search(module_name):
        return (out, inner, 1, 1)
    return (out, inner)
