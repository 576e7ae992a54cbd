"""Which kind of model a file or folder holds, decided from key names and shapes before anything is built.

charframe loads the model families of `charframe.families` (SD1.x, SDXL); everything else (SD2, SD3, Flux,
inpainting, the SDXL refiner, a LoRA passed as the base model, ...) is refused with a message that names the file
and what it looks like, instead of a shape error deep inside diffusers. The signatures are data: the generic
refusals in `data/models/architectures.toml`, each family's own in `data/families/<id>.toml`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from charframe.errors import CharframeError
from charframe.families.family import Family, families, get_family, names, of_unet_config
from charframe.families.signature import Signature, signature
from charframe.models.checkpoint import key_shapes
from charframe.util import toml as tomlio

__all__ = ["Signature", "signatures", "detect", "check_single_file", "check_diffusers_folder", "supported_hint",
           "family_of_model"]


def supported_hint() -> str:
    """"charframe supports SDXL, SD1.x checkpoints (not yet supported)", from the shipped families."""
    return f"charframe supports {names()} checkpoints (not yet supported)"


@lru_cache(maxsize=1)
def signatures() -> tuple[Signature, ...]:
    """The whole signature table in matching order: generic refusals, each family's refusals and recognition
    (families in their order), then the generic entries marked `after_families`."""
    text = resources.files("charframe").joinpath("data/models/architectures.toml").read_text("utf-8")
    data = tomlio.loads(text)
    fill = {"families": names()}
    default_hint = data.get("defaults", {}).get("hint", "{families}").format(**fill)
    generic = [(e.get("after_families", False), signature(e, default_hint)) for e in data["architecture"]]
    generic = [(late, Signature(**{**s.__dict__, "hint": s.hint.format(**fill)})) for late, s in generic]
    own = [s for fam in families() for s in (*fam.refuse, fam.recognize)]
    return tuple([s for late, s in generic if not late] + own + [s for late, s in generic if late])


def detect(shapes: dict[str, tuple[int, ...]]) -> Signature | None:
    """The first signature matching a single-file key → shape map, or None when nothing matches."""
    return next((s for s in signatures() if s.matches(shapes)), None)


def check_single_file(path: Path, shapes: dict[str, tuple[int, ...]], family: str | Family | None = None) -> Signature:
    """The recognising signature of a loadable file, or a `CharframeError` that says what the file is instead.

    A recognised file must hold every text encoder its family has (Pony and Illustrious files are sometimes
    shared as UNet + VAE only); with `family` (a character file's choice) the file must be of that family."""
    sig = detect(shapes)
    if sig is None:
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        raise CharframeError(
            f"{path}: not a recognised Stable Diffusion checkpoint (first keys: {sample}); {supported_hint()}"
        )
    if not sig.supported:
        raise CharframeError(f"{path}: looks like {sig.looks_like}; {sig.hint}")
    fam = get_family(sig.family)
    if family is not None and get_family(family).id != fam.id:
        raise CharframeError(
            f"{path}: is an {fam.name} checkpoint but {{param}} says {get_family(family).name}; "
            f"give an {get_family(family).name} model or set the family to {fam.id}", param="family"
        )
    missing = [te for te in fam.text_encoders if not any(k.startswith(te.ldm_prefix) for k in shapes)]
    if missing:
        te = missing[0]
        raise CharframeError(
            f"{path}: {fam.name} UNet found but no {te.describe} weights ({te.ldm_prefix}*); "
            f"pass a complete checkpoint (UNet + VAE + text encoder{'s' if len(fam.text_encoders) > 1 else ''}) "
            "or a diffusers folder"
        )
    return sig


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{path}: unreadable config ({exc})") from exc


def check_diffusers_folder(path: Path) -> Family:
    """The family of a diffusers text-to-image folder (pipeline class and UNet config), or a refusal."""
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file():
        if (path / "transformer").is_dir():
            raise CharframeError(f"{path}: looks like a transformer (DiT) model such as SD3 or Flux; {supported_hint()}")
        raise CharframeError(
            f"{path}: not a diffusers model folder (no unet/config.json); pass a diffusers model folder "
            "or a single .safetensors checkpoint"
        )
    index = path / "model_index.json"
    cls = _read_json(index).get("_class_name", "") if index.is_file() else ""
    unet = _read_json(unet_config)
    fam = of_unet_config(unet)
    by_class = next((f for f in families() if cls == f.data.get("diffusers", {}).get("pipeline")), None)
    looks_like = None
    if "Refiner" in cls or ("XL" in cls and "Img2Img" in cls and not (path / "text_encoder").is_dir()):
        looks_like = "the SDXL refiner"
    elif "Inpaint" in cls or unet.get("in_channels", 4) == 9:
        looks_like = f"an inpainting model ({fam.name}, 9 UNet input channels)"
    elif unet.get("in_channels", 4) != 4:
        looks_like = f"a model with {unet.get('in_channels')} UNet input channels"
    elif not fam.unet_marks.get("addition_embed_type") and unet.get("cross_attention_dim") == 1024:
        looks_like = "SD2.x (1024-wide cross-attention context)"
    elif by_class is not None and by_class.id != fam.id:
        looks_like = f"a {cls} whose unet/config.json is not an {by_class.name} UNet (it reads as {fam.name})"
    elif cls and "StableDiffusion" not in cls:
        looks_like = f"a {cls}"
    if looks_like:
        raise CharframeError(f"{path}: looks like {looks_like}; {supported_hint()}")
    return fam


def family_of_model(path: Path) -> Family:
    """The family of a model file (read: its key names and shapes only, for .safetensors) or diffusers folder."""
    path = Path(path)
    if path.is_dir():
        return check_diffusers_folder(path)
    return get_family(check_single_file(path, key_shapes(path)).family)
