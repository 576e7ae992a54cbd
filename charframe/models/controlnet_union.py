"""Union ControlNets (xinsir's controlnet-union-sdxl-1.0 and promax): one network for many control types.

diffusers builds them as `ControlNetUnionModel` (whose key names are xinsir's own: `task_embedding`,
`transformer_layes`, `spatial_ch_projs`, `control_add_embedding`), so a downloaded
`diffusion_pytorch_model_promax.safetensors` loads key for key. What the shapes do not say the UNet's config
does; the number of control types (6, or 8 for promax) is `task_embedding`'s first dimension. The control type of
each unit comes from its map (`data/controlnets.toml` [union]): diffusers' `control_mode`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

KINDS_FILE = DATA_DIR / "controlnets.toml"
#: the union part's keys (a file with them is a union ControlNet)
UNION_KEYS = ("task_embedding", "control_add_embedding.")


@lru_cache(maxsize=1)
def controlnet_data() -> dict[str, Any]:
    """`data/controlnets.toml`: union control types, preprocessor names, prediction markers."""
    return tomlio.load(KINDS_FILE)


def is_union(control: dict[str, tuple[int, ...]]) -> bool:
    return any(k.startswith(UNION_KEYS) for k in control)


def union_config(config: dict[str, Any], control: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """A ControlNet config (`controlnet.controlnet_config`) turned into a `ControlNetUnionModel` one, sized by the
    file's union part: control types and transformer width from `task_embedding`, layers counted."""
    types, width = control["task_embedding"]
    layers = {int(m[1]) for k in control if (m := re.match(r"transformer_layes\.(\d+)\.", k))}
    proj = control.get("spatial_ch_projs.weight", (width, width))[0]
    out = {k: v for k, v in config.items() if k not in ("global_pool_conditions", "_class_name")}
    return out | {"num_control_type": int(types), "num_trans_channel": int(width), "num_trans_layer": max(1, len(layers)),
                  "num_proj_channel": int(proj), "num_trans_head": _heads(int(width))}


def _heads(width: int) -> int:
    """xinsir's union transformer has 8 heads (320 wide); a narrower test model keeps 8 when they divide it."""
    return 8 if width % 8 == 0 else 1


def build_union(config: dict[str, Any], *, meta: bool = False) -> Any:
    """A ControlNetUnionModel from a config dict (on the meta device when `meta`)."""
    from diffusers import ControlNetUnionModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    if not meta:
        return ControlNetUnionModel.from_config(cfg)
    from accelerate import init_empty_weights

    with init_empty_weights():
        return ControlNetUnionModel.from_config(cfg)


def control_mode(map_name: str, model: Any, where: str) -> int:
    """The union control type of a map (`softedge` → 2), checked against the model's number of types."""
    data = controlnet_data()["union"]
    mode = data["modes"].get(map_name)
    types = int(getattr(model.config, "num_control_type", 0))
    if mode is None or mode >= types:
        usable = ", ".join(m for m, i in data["modes"].items() if i < types)
        raise CharframeError(f"{where}: a union ControlNet has no control type for the {map_name!r} map; "
                             f"give this unit one of {usable}, or a ControlNet made for {map_name} maps")
    return int(mode)
