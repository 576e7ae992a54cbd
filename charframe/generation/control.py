"""Control images for one template code: the template's exact maps, or HED run on the template picture.

Exact maps come from `FaceTemplate/control/<map>/f12.png` (`BodyTemplate/…` for b codes), rendered from the
3D mannequin by `charframe templates`. Azimuths 5-7 of asymmetric characters use `…/f15.png` when the user has
one, else the mirror of azimuth 3/2/1 (CONVENTIONS §2; a normal map's red channel flips with it). `hed` runs
controlnet-aux's HED network on the template picture itself (for templates a user drew), with weights read
weights-only from a local `ControlNetHED.pth`.

A family that lists first-pass sizes (SDXL's aspect buckets, `generation.families.first_pass_sizes`) draws each
code at the listed size nearest its template's aspect ratio; the map is fitted inside it whole (scaled, then
padded with its own border colour, which is the "nothing here" of every map kind), never cropped or stretched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from charframe.dataset.naming import ImageCode
from charframe.errors import CharframeError
from charframe.models.checkpoint import read_state_dict

HED = "hed"
HED_HINT = ("download ControlNetHED.pth from the lllyasviel/Annotators repository and set generation.hed_model "
            "in the character file to its path")


def output_size(template: tuple[int, int], size: int, sizes: Sequence[tuple[int, int]] | None = None) -> tuple[int, int]:
    """(width, height) with the shorter side `size`, the template's aspect kept, both multiples of 8; with `sizes`
    (a family's first-pass sizes), the one whose aspect ratio is nearest the template's."""
    w, h = template
    if sizes:
        return min(sizes, key=lambda s: abs(math.log((s[0] / s[1]) / (w / h))))
    scale = size / min(w, h)
    return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)


def fit(image: Image.Image, size: tuple[int, int], resample: int, pad: bool = True) -> Image.Image:
    """`image` at `size`: resized when the aspect ratios agree (to the pixel) or `pad` is False, else scaled to fit
    inside and padded evenly with the colour of its top-left pixel (a map's background)."""
    w, h = size
    iw, ih = image.size
    if not pad or round(iw * h / ih) == w or round(ih * w / iw) == h:
        return image.resize(size, resample)
    scale = min(w / iw, h / ih)
    inner = image.resize((max(1, round(iw * scale)), max(1, round(ih * scale))), resample)
    out = Image.new(image.mode, size, image.getpixel((0, 0)))
    out.paste(inner, ((w - inner.width) // 2, (h - inner.height) // 2))
    return out


def mirror(img: np.ndarray, map_name: str) -> np.ndarray:
    """The horizontal mirror of a map; a normal map's left/right (red) component flips too."""
    out = np.ascontiguousarray(img[:, ::-1])
    if map_name == "normal" and out.ndim == 3:
        out[..., 0] = 255 - out[..., 0]
    return out


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{path}: not a readable image ({exc}); re-render the templates or replace the file") from exc


def template_image(set_dir: Path, code: ImageCode, map_name: str | None) -> np.ndarray:
    """The RGB pixels of a code's map (`map_name`) or picture (None), mirrored from 3-1 for 5-7 when needed."""
    folder = set_dir if map_name is None else set_dir / "control" / map_name
    path = folder / f"{code.code}.png"
    if path.is_file():
        return _read(path)
    source = folder / f"{code.kind}{code.elevation}{8 - code.azimuth}.png"
    if code.azimuth > 4 and source.is_file():
        return mirror(_read(source), map_name or "")
    what = f"no {map_name} control map" if map_name else "no template picture"
    raise CharframeError(
        f"{path}: {what} for {code.code}; render the templates (charframe templates) or put the map there "
        f"(known maps are folders of {set_dir / 'control'})"
    )


def hed_detector(hed_model: Path | None, *, seed: int = 0) -> Any:
    """controlnet-aux's HEDdetector with weights from `hed_model` (read weights-only), or random when None."""
    import warnings

    import torch

    with warnings.catch_warnings():  # controlnet-aux's package import warns about timm and registry names
        warnings.simplefilter("ignore")
        from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetHED_Apache2()
    if hed_model is not None:
        if not hed_model.is_file():
            raise CharframeError(f"{hed_model}: HED annotator weights not found; {HED_HINT}")
        try:
            net.load_state_dict(read_state_dict(hed_model))
        except RuntimeError as exc:
            raise CharframeError(f"{hed_model}: not controlnet-aux's HED weights ({str(exc).splitlines()[0]}); {HED_HINT}") from exc
    return HEDdetector(net.float().eval())


def control_image(set_dir: Path, code: ImageCode, map_name: str, size: int, hed: Any = None,
                  sizes: Sequence[tuple[int, int]] | None = None) -> Image.Image:
    """The control image of one code at generation size (shorter side `size`, or the nearest of `sizes`), RGB."""
    if map_name == HED:
        if hed is None:
            raise CharframeError(f"map 'hed' needs the HED annotator; {HED_HINT}")
        picture = template_image(set_dir, code, None)
        w, h = output_size((picture.shape[1], picture.shape[0]), size, sizes)
        edges = hed(picture, detect_resolution=min(w, h), image_resolution=min(w, h), output_type="np")
        return fit(Image.fromarray(np.asarray(edges)).convert("RGB"), (w, h), Image.BILINEAR, pad=sizes is not None)
    pixels = template_image(set_dir, code, map_name)
    w, h = output_size((pixels.shape[1], pixels.shape[0]), size, sizes)
    return fit(Image.fromarray(pixels), (w, h), Image.LANCZOS, pad=sizes is not None)
