"""`Family`: one model family as the rest of charframe asks about it, read from `data/families/<id>.toml`.

Adding a family is a data file here (recognition, shipped configs, text encoders and their LoRA prefixes, block
layout, resolution) plus its configs under `data/models/<id>/`; code elsewhere branches on the family's data
(`unet_names`, `text_encoders`, `blocks`), not on its name. Families are found by listing the data folder, in
their `order`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping

from charframe.errors import CharframeError
from charframe.families.signature import Signature, signature
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

FAMILIES_DIR = DATA_DIR / "families"
#: the family of everything that does not say otherwise (files, character files, LoRAs of old tools)
DEFAULT = "sd15"


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a family, in conditioning order."""

    component: str  # diffusers component / pipeline attribute: "text_encoder", "text_encoder_2"
    cls: str  # transformers class: "CLIPTextModel", "CLIPTextModelWithProjection"
    ldm_prefix: str  # where a single file keeps its weights
    ldm_layout: str  # "clip" (transformers names under the prefix) or "open_clip"
    lora_prefix: str  # kohya LoRA prefix: "lora_te", "lora_te1", "lora_te2"
    tokenizer: str  # diffusers component of its tokenizer
    pad_token: str
    describe: str


@dataclass(frozen=True)
class BlockForm:
    """A block-weight list of one length: the blocks it names, in order, and the weight of those it omits."""

    ids: tuple[str, ...]
    fill: float


@dataclass(frozen=True)
class Family:
    id: str
    name: str
    aliases: tuple[str, ...]
    base_model_version: str
    modelspec_architecture: str
    config_dir: str
    prediction_type: str
    resolution: int
    order: int
    recognize: Signature
    refuse: tuple[Signature, ...]
    text_encoders: tuple[TextEncoder, ...]
    unet_prefix: str
    unet_names: str
    context_width: int
    conv1x1: tuple[str, ...]
    lora_versions: tuple[str, ...]
    block_forms: tuple[BlockForm, ...]
    presets_table: str
    unet_marks: Mapping[str, Any] = field(default_factory=dict)
    v_pred_keys: tuple[str, ...] = ()
    ztsnr_keys: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def lora_prefixes(self) -> tuple[str, ...]:
        """Every kohya module prefix of this family's LoRAs (UNet first)."""
        return (self.unet_prefix, *(te.lora_prefix for te in self.text_encoders))

    def block_form(self, length: int) -> BlockForm | None:
        return next((f for f in self.block_forms if len(f.ids) == length), None)

    def describe_forms(self) -> str:
        """"20 (BASE, IN00…) or 12 (…)" for messages."""
        return " or ".join(f"{len(f.ids)} ({', '.join(f.ids)})" for f in self.block_forms)


def _family(data: Mapping[str, Any], source: str) -> Family:
    try:
        fid, lora = data["id"], data["lora"]
        hint = f"{data['name']} files are recognised by charframe.families"
        return Family(
            id=fid,
            name=data["name"],
            aliases=tuple(a.lower() for a in data.get("aliases", ())) + (fid,),
            base_model_version=data["base_model_version"],
            modelspec_architecture=data["modelspec_architecture"],
            config_dir=data["config_dir"],
            prediction_type=data.get("prediction_type", "epsilon"),
            resolution=int(data["resolution"]),
            order=int(data.get("order", 100)),
            recognize=signature(data["recognize"], hint, family=fid),
            refuse=tuple(signature(e, hint) for e in data.get("refuse", ())),
            text_encoders=tuple(
                TextEncoder(t["component"], t["class"], t["ldm_prefix"], t.get("ldm_layout", "clip"), t["lora_prefix"],
                            t["tokenizer"], t["pad_token"], t.get("describe", t["component"]))
                for t in data["text_encoder"]
            ),
            unet_prefix=lora["unet_prefix"],
            unet_names=lora["unet_names"],
            context_width=int(lora["context_width"]),
            conv1x1=tuple(lora.get("conv1x1", ())),
            lora_versions=tuple(lora.get("base_model_versions", ())),
            block_forms=tuple(BlockForm(tuple(b["ids"]), float(b.get("fill", 1))) for b in data["blocks"]),
            presets_table=data.get("presets", {}).get("table", f"{fid}.block_presets"),
            unet_marks=dict(data.get("unet", {})),
            v_pred_keys=tuple(data.get("v_pred_keys", ())),
            ztsnr_keys=tuple(data.get("ztsnr_keys", ())),
            data=dict(data),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RuntimeError(f"{source}: malformed family file ({type(e).__name__}: {e})") from None


@lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """Every shipped family, in detection order."""
    found = [_family(tomlio.load(p), str(p)) for p in sorted(FAMILIES_DIR.glob("*.toml"))]
    return tuple(sorted(found, key=lambda f: (f.order, f.id)))


def names() -> str:
    """"SD1.x and SDXL" for messages (by id, so the oldest family reads first)."""
    found = [f.name for f in sorted(families(), key=lambda f: f.id)]
    return " and ".join(found) if len(found) < 3 else ", ".join(found[:-1]) + " and " + found[-1]


def get_family(name: str | "Family" | None = None, where: str = "{param}") -> Family:
    """The family called `name` (an id or alias, any case; None = the default, SD1.x)."""
    if isinstance(name, Family):
        return name
    key = (name or DEFAULT).strip().lower()
    for fam in families():
        if key in fam.aliases:
            return fam
    known = ", ".join(f"{f.id} ({f.name})" for f in families())
    raise CharframeError(f"{where}: unknown model family {name!r}; known: {known}",
                         param="family" if where == "{param}" else None)


def of_base_model_version(version: str) -> Family | None:
    """The family whose LoRAs carry this `ss_base_model_version` (None when no family claims it)."""
    return next((f for f in families() if version and version.startswith(f.lora_versions)), None)


def of_context_width(width: int) -> Family | None:
    """The family whose UNet cross-attention reads `width`-wide text states (768 SD1.x, 2048 SDXL)."""
    return next((f for f in families() if f.context_width == width), None)


def of_unet_config(config: Mapping[str, Any]) -> Family:
    """The family of a diffusers UNet config: the first whose `[unet]` marks it matches (SD1.x by default)."""
    for fam in families():
        if fam.unet_marks and all((config.get(k) or "") == v for k, v in fam.unet_marks.items()):
            return fam
    return get_family(DEFAULT)


def is_v_prediction(fam: Family, keys: Iterable[str]) -> bool:
    """Whether a single file marks itself v-prediction (NoobAI's `v_pred` key)."""
    marks = set(fam.v_pred_keys) | set(fam.ztsnr_keys)
    return any(k in marks for k in keys)


def require(fam: Family, use: str, where: str) -> None:
    """Refuse a use (`generate`, `train`) the family's `[support]` table does not grant yet, naming `where`."""
    if not fam.data.get("support", {}).get(use, False):
        able = " and ".join(f.name for f in families() if f.data.get("support", {}).get(use, False))
        verb = {"generate": "generating images", "train": "training"}.get(use, use)
        raise CharframeError(f"{where}: is an {fam.name} model; {verb} with {fam.name} models is not yet supported "
                             f"(it works with {able} models; {fam.name} LoRA files work with inspect, merge, compress and mix)")
