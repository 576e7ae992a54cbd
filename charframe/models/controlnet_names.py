"""What a ControlNet's file (or folder) name says: the preprocessor it was trained on and the prediction type of
the model it was made for (`data/controlnets.toml`).

Single-type ControlNets are published under their preprocessor's name (NoobAI-XL's
`noob-sdxl-controlnet-depth_midas`, `noobaiXLControlnet_epsNormalMidas`; lllyasviel's `control_v11p_sd15_softedge`)
and NoobAI-XL's carry `eps`/`v` for its eps and v-prediction releases. Neither is in the weights, so the name is
all there is; generation warns when a unit gives such a ControlNet another kind of map, or when it was made for
the other prediction type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from charframe.models.controlnet_union import controlnet_data

#: maps that are the same kind of picture for a ControlNet (a HED edge map is a soft-edge map)
SAME_KIND = {"hed": "softedge"}


@dataclass(frozen=True)
class NameHints:
    preprocessor: str | None = None  # "depth_midas"
    map: str | None = None  # the charframe map it expects; "" = a kind no template map is; None = not named
    prediction: str | None = None  # "epsilon", "v_prediction", None = not named


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def name_hints(name: str) -> NameHints:
    """The hints in a ControlNet file or folder name (`noob-sdxl-controlnet-depth_midas.fp16.safetensors`)."""
    data = controlnet_data()
    stem = name.lower()
    squashed = _squash(stem)
    pre = sorted(data["preprocessors"].items(), key=lambda kv: -len(_squash(kv[0])))
    found = next(((p, m) for p, m in pre if _squash(p) in squashed), (None, None))
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem) if t]
    marks = data["prediction"]
    prediction = None
    if any(_squash(m) in squashed for m in marks["v_prediction"]) or (tokens and tokens[0] == marks["v_prefix"]):
        prediction = "v_prediction"
    elif any(t.startswith(tuple(marks["epsilon"])) for t in tokens):
        prediction = "epsilon"
    return NameHints(found[0], found[1], prediction)


def map_mismatch(hints: NameHints, map_name: str) -> bool:
    """Whether a unit's map is another kind than the one the ControlNet's name says it was trained on."""
    if hints.map is None:
        return False
    return SAME_KIND.get(map_name, map_name) != SAME_KIND.get(hints.map, hints.map)
