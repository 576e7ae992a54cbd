"""The name rules (CONVENTIONS §2–§4): the one place that reads meaning out of file and folder names.

- image code: `f12-longhair.png` → kind `f`, elevation 1, azimuth 2, free rest `-longhair`;
- dataset folder: `4_krnk` → repeats 4, name `krnk`; `2_krnksf_krnk` → parts (`krnksf`, `krnk`);
- subset folder: `kuronekomimi girl, shorthair_noflip_f0768` → caption keywords
  (`kuronekomimi`, `shorthair`), class tokens `kuronekomimi girl`, flip forced off, size `f` 768.

Everything else (captions, TOML, generation prompts) asks this module instead of slicing names itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePath

from charframe.errors import CharframeError

#: Image file extensions charframe reads (lower case, with dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

KINDS = ("f", "b")
ELEVATIONS = (0, 1, 2)
AZIMUTHS = tuple(range(8))

_CODE_RE = re.compile(r"([fb])([0-2])([0-7])")
_REPEATS_RE = re.compile(r"([0-9]+)_")
_SIZE_RE = re.compile(r"([fb])([0-9]{4})")

#: Subset-folder markers: a `_`-separated part of the name after the keyword part.
FLIP_MARKER = "flip"
NOFLIP_MARKER = "noflip"
REG_MARKER = "reg"
#: `_alpha_`: the images are transparent copies; sd-scripts weights the loss by their alpha (`alpha_mask`)
ALPHA_MARKER = "alpha"


@dataclass(frozen=True)
class ImageCode:
    """The code at the start of an image name: kind, elevation, azimuth, and the free rest."""

    kind: str  # "f" face set (upper body), "b" body set (full body)
    elevation: int  # 0 horizontal, 1 from above, 2 from below
    azimuth: int  # 0 front, 45° steps counter-clockwise; 4 straight behind
    rest: str = ""  # the rest of the file stem after the code (free text)

    @property
    def code(self) -> str:
        return f"{self.kind}{self.elevation}{self.azimuth}"

    def __str__(self) -> str:
        return self.code


def is_image_name(name: str) -> bool:
    """True for png/jpg/jpeg/webp file names (any letter case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def parse_code(name: str | os.PathLike) -> ImageCode | None:
    """The code of an image name or path (`f00.png`, `b03_take2.webp`, `f12`), or None without one.

    Only the file name counts, and only its start: `[fb][0-2][0-7]`, lower case as published.
    """
    base = os.path.basename(os.fspath(name))  # (not PurePath: called once per image in every rerun)
    stem, ext = os.path.splitext(base)
    if ext.lower() not in IMAGE_EXTENSIONS:
        stem = base  # a bare code such as "f12" or a name without an image extension
    m = _CODE_RE.match(stem)
    if not m:
        return None
    return ImageCode(m.group(1), int(m.group(2)), int(m.group(3)), stem[3:])


def require_code(name: str | os.PathLike) -> ImageCode:
    """Like `parse_code`, but a name without a code is an error that explains the format."""
    code = parse_code(name)
    if code is None:
        raise CharframeError(
            f"{os.fspath(name)!s}: no image code; a code is [fb][0-2][0-7] at the start of the name "
            "(f/b = face/body, elevation 0-2, azimuth 0-7), e.g. f00 or b12-take2.png"
        )
    return code


@dataclass(frozen=True)
class DatasetName:
    """A dataset folder name `N_name`: N = repeats (1 when absent), name parts split on `_`."""

    folder: str
    repeats: int
    has_repeats: bool  # False when the folder had no numeric prefix (repeats fell back to 1)
    name: str  # the folder name without the `N_` prefix, e.g. "krnksf_krnk"

    @property
    def parts(self) -> tuple[str, ...]:
        """Name parts, e.g. ("krnksf", "krnk") for `2_krnksf_krnk` (staged datasets, §5)."""
        return tuple(p for p in self.name.split("_") if p)


def parse_dataset_name(folder: str | os.PathLike) -> DatasetName:
    """`4_krnk` → repeats 4; `krnk` or `v2b_krnk` → repeats 1 (the caller says so once)."""
    base = PurePath(os.fspath(folder)).name
    m = _REPEATS_RE.match(base)
    if not m:
        return DatasetName(base, 1, False, base)
    repeats = int(m.group(1))
    if repeats < 1:
        raise CharframeError(
            f"{base}: the repeats prefix is {m.group(1)}; it must be 1 or more "
            f"(rename the folder, e.g. 1_{base[m.end():]})"
        )
    return DatasetName(base, repeats, True, base[m.end():])


@dataclass(frozen=True)
class SizeSuffix:
    """The `_f0512` export-size suffix of multi-size sibling folders."""

    kind: str
    size: int


@dataclass(frozen=True)
class SubsetName:
    """What a subset (image) folder name says about captions and the dataset TOML."""

    folder: str
    keyword_part: str  # the name up to the first `_`
    keywords: tuple[str, ...]  # caption tags from the keyword part (§3)
    class_tokens: str  # keyword part up to the first `,` (§4)
    flip: bool | None  # `_flip_` → True, `_noflip_` → False, else None (the default applies)
    is_reg: bool  # `_reg_` marks a regularisation subset (charframe extension)
    size: SizeSuffix | None  # `_f0512` → SizeSuffix("f", 512)
    alpha_mask: bool = False  # `_alpha_` marks transparent images for sd-scripts' alpha_mask (charframe extension)

    @property
    def flip_aug(self) -> bool:
        """flip_aug for the TOML: on unless `_noflip_` says otherwise."""
        return True if self.flip is None else self.flip


def keywords_of(keyword_part: str) -> tuple[str, ...]:
    """Caption keywords (§3): first tag loses everything from its first space; later tags stay."""
    head, sep, tail = keyword_part.partition(",")
    first = head.split(" ", 1)[0]
    tags = [first.strip()]
    if sep:
        tags += [t.strip() for t in tail.split(",")]
    return tuple(t for t in tags if t)


def parse_subset_name(folder: str | os.PathLike) -> SubsetName:
    """Split a subset folder name into its keyword part and its `_`-separated markers."""
    base = PurePath(os.fspath(folder)).name
    keyword_part, _, tail = base.partition("_")
    markers = [p for p in tail.split("_") if p] if tail else []
    flip_markers = {m for m in markers if m in (FLIP_MARKER, NOFLIP_MARKER)}
    if len(flip_markers) > 1:
        raise CharframeError(f"{base}: the folder name has both _flip_ and _noflip_; keep one")
    flip = None if not flip_markers else (FLIP_MARKER in flip_markers)
    size = None
    for m in reversed(markers):
        sm = _SIZE_RE.fullmatch(m)
        if sm:
            size = SizeSuffix(sm.group(1), int(sm.group(2)))
            break
    return SubsetName(
        folder=base,
        keyword_part=keyword_part,
        keywords=keywords_of(keyword_part),
        class_tokens=keyword_part.partition(",")[0].strip(),
        flip=flip,
        is_reg=REG_MARKER in markers,
        size=size,
        alpha_mask=ALPHA_MARKER in markers,
    )


def subset_folder_name(keyword_part: str, kind: str, size: int) -> str:
    """The multi-size sibling folder name, e.g. ("krnk girl", "f", 512) → `krnk girl_f0512`."""
    if kind not in KINDS or not 0 < size <= 9999:
        raise CharframeError(f"bad subset folder size {kind}{size}: kind is f or b, size 1-9999")
    return f"{keyword_part}_{kind}{size:04d}"


def with_marker(folder_name: str, marker: str) -> str:
    """`krnk girl_f0512` + "alpha" → `krnk girl_alpha_f0512` (the marker right after the keyword part)."""
    keyword_part, sep, tail = folder_name.partition("_")
    return f"{keyword_part}_{marker}{sep}{tail}"
