"""Which kind of model a file or folder holds, decided from key names and shapes before anything is built.

charframe trains SD1.x only; everything else (SD2, SDXL, inpainting, SD3, Flux, a LoRA passed as the
base model, ...) is refused with a message that names the file and what it looks like, instead of a
shape error deep inside diffusers. Single-file signatures are data: `data/models/architectures.toml`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from charframe.util import toml as tomlio
from charframe.errors import CharframeError

SUPPORTED_HINT = "charframe supports SD1.x checkpoints only (not yet supported)"


@dataclass(frozen=True)
class Signature:
    id: str
    looks_like: str
    hint: str
    supported: bool = False
    prefixes: tuple[str, ...] = ()
    shape_key: str | None = None
    shape_dim: int = 0
    shape_equals: int = 0

    def matches(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        if self.prefixes and any(k.startswith(self.prefixes) for k in shapes):
            return True
        if self.shape_key is not None and self.shape_key in shapes:
            shape = shapes[self.shape_key]
            return len(shape) > self.shape_dim and shape[self.shape_dim] == self.shape_equals
        return False


@lru_cache(maxsize=1)
def signatures() -> tuple[Signature, ...]:
    """The shipped signature table, in matching order."""
    text = resources.files("charframe").joinpath("data/models/architectures.toml").read_text("utf-8")
    data = tomlio.loads(text)
    default_hint = data.get("defaults", {}).get("hint", SUPPORTED_HINT)
    out = []
    for entry in data["architecture"]:
        shape = entry.get("shape", {})
        out.append(
            Signature(
                id=entry["id"],
                looks_like=entry["looks_like"],
                hint=entry.get("hint", default_hint),
                supported=bool(entry.get("supported", False)),
                prefixes=tuple(entry.get("prefixes", ())),
                shape_key=shape.get("key"),
                shape_dim=int(shape.get("dim", 0)),
                shape_equals=int(shape.get("equals", 0)),
            )
        )
    return tuple(out)


def detect(shapes: dict[str, tuple[int, ...]]) -> Signature | None:
    """The first signature matching a single-file key → shape map, or None when nothing matches."""
    return next((s for s in signatures() if s.matches(shapes)), None)


def check_single_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Signature:
    """The SD1.x signature, or a `CharframeError` that says what the file looks like instead."""
    sig = detect(shapes)
    if sig is None:
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        raise CharframeError(
            f"{path}: not a recognised Stable Diffusion checkpoint (first keys: {sample}); {SUPPORTED_HINT}"
        )
    if not sig.supported:
        raise CharframeError(f"{path}: looks like {sig.looks_like}; {sig.hint}")
    missing = [p for p in ("cond_stage_model.transformer.",) if not any(k.startswith(p) for k in shapes)]
    if missing:
        raise CharframeError(
            f"{path}: SD1.x UNet found but no CLIP text encoder weights ({missing[0]}*); "
            "pass a complete checkpoint (UNet + VAE + text encoder) or a diffusers folder"
        )
    return sig


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{path}: unreadable config ({exc})") from exc


def check_diffusers_folder(path: Path) -> None:
    """Refuse diffusers folders that are not SD1.x text-to-image (by pipeline class and UNet config)."""
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file():
        if (path / "transformer").is_dir():
            raise CharframeError(f"{path}: looks like a transformer (DiT) model such as SD3 or Flux; {SUPPORTED_HINT}")
        raise CharframeError(
            f"{path}: not a diffusers model folder (no unet/config.json); pass an SD1.x diffusers folder "
            "or a single .safetensors checkpoint"
        )
    index = path / "model_index.json"
    cls = _read_json(index).get("_class_name", "") if index.is_file() else ""
    unet = _read_json(unet_config)
    looks_like = None
    if "XL" in cls or unet.get("addition_embed_type") == "text_time":
        looks_like = "SDXL"
    elif "Inpaint" in cls or unet.get("in_channels", 4) == 9:
        looks_like = "an inpainting model (9 UNet input channels)"
    elif unet.get("in_channels", 4) != 4:
        looks_like = f"a model with {unet.get('in_channels')} UNet input channels"
    elif unet.get("cross_attention_dim") == 1024:
        looks_like = "SD2.x (1024-wide cross-attention context)"
    elif cls and cls != "StableDiffusionPipeline" and "StableDiffusion" not in cls:
        looks_like = f"a {cls}"
    if looks_like:
        raise CharframeError(f"{path}: looks like {looks_like}; {SUPPORTED_HINT}")
