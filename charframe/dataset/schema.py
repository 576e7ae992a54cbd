"""The sd-scripts dataset TOML as typed records: one `General`, `Dataset`, `Subset` for writer and reader.

`charframe toml` writes these records (`dataset.toml_writer`); the built-in trainer reads them back
(`training.data`) with sd-scripts' meaning, where a value left out (None) is inherited from the level above
(`[general]` → `[[datasets]]` → `[[datasets.subsets]]`) and finally from sd-scripts' defaults. Reading goes
through `charframe.util.schema`, so a hand-written file with `batch_size = 0`, `resolution = "big"`, an
unknown key or a wrong type is one message naming the file, line and key.

Keys valid for sd-scripts that the built-in trainer does not act on are accepted (`IGNORED_KEYS`) so the
same file still works with the kohya engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from charframe.errors import CharframeError
from charframe.util.schema import Source, limits, parse, read_toml_file

#: Valid sd-scripts keys the built-in trainer does not act on (the kohya engine does).
IGNORED_KEYS = frozenset(
    "face_crop_aug_range keep_tokens_separator secondary_separator caption_separator enable_wildcard "
    "token_warmup_min token_warmup_step custom_attributes caption_dropout_rate caption_dropout_every_n_epochs "
    "caption_tag_dropout_rate cache_info resize_interpolation validation_seed validation_split "
    "network_multiplier".split()
)
_IGNORED = {"ignored": True}
_RESO = limits(min=1, help="pixels")


@dataclass(frozen=True, kw_only=True)
class _Ignored:
    """sd-scripts keys passed through unchecked (any level)."""

    face_crop_aug_range: Any = field(default=None, metadata=_IGNORED)
    keep_tokens_separator: Any = field(default=None, metadata=_IGNORED)
    secondary_separator: Any = field(default=None, metadata=_IGNORED)
    caption_separator: Any = field(default=None, metadata=_IGNORED)
    enable_wildcard: Any = field(default=None, metadata=_IGNORED)
    token_warmup_min: Any = field(default=None, metadata=_IGNORED)
    token_warmup_step: Any = field(default=None, metadata=_IGNORED)
    custom_attributes: Any = field(default=None, metadata=_IGNORED)
    caption_dropout_rate: Any = field(default=None, metadata=_IGNORED)
    caption_dropout_every_n_epochs: Any = field(default=None, metadata=_IGNORED)
    caption_tag_dropout_rate: Any = field(default=None, metadata=_IGNORED)
    cache_info: Any = field(default=None, metadata=_IGNORED)
    resize_interpolation: Any = field(default=None, metadata=_IGNORED)
    validation_seed: Any = field(default=None, metadata=_IGNORED)
    validation_split: Any = field(default=None, metadata=_IGNORED)
    network_multiplier: Any = field(default=None, metadata=_IGNORED)


@dataclass(frozen=True)
class Subset(_Ignored):
    """One `[[datasets.subsets]]`: an image folder (None = inherited)."""

    image_dir: str
    class_tokens: str | None = None
    flip_aug: bool | None = None
    is_reg: bool | None = None
    num_repeats: int | None = field(default=None, metadata=limits(min=0))
    caption_extension: str | None = None
    color_aug: bool | None = None
    random_crop: bool | None = None
    shuffle_caption: bool | None = None
    keep_tokens: int | None = field(default=None, metadata=limits(min=0))
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    alpha_mask: bool | None = None


@dataclass(frozen=True)
class Dataset(_Ignored):
    """One `[[datasets]]`: a resolution, a batch size, bucketing, and its subsets (None = inherited)."""

    resolution: int | tuple[int, ...] | None = field(default=None, metadata=_RESO)
    batch_size: int | None = field(default=None, metadata=limits(min=1))
    subsets: tuple[Subset, ...] = ()
    enable_bucket: bool | None = None
    bucket_no_upscale: bool | None = None
    min_bucket_reso: int | None = field(default=None, metadata=_RESO)
    max_bucket_reso: int | None = field(default=None, metadata=_RESO)
    bucket_reso_steps: int | None = field(default=None, metadata=_RESO)
    num_repeats: int | None = field(default=None, metadata=limits(min=0))
    caption_extension: str | None = None
    class_tokens: str | None = None
    flip_aug: bool | None = None
    color_aug: bool | None = None
    random_crop: bool | None = None
    shuffle_caption: bool | None = None
    keep_tokens: int | None = field(default=None, metadata=limits(min=0))
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    alpha_mask: bool | None = None


@dataclass(frozen=True)
class General(_Ignored):
    """`[general]`: values for every dataset and subset below (None = sd-scripts' default)."""

    color_aug: bool | None = None
    enable_bucket: bool | None = None
    bucket_no_upscale: bool | None = None
    caption_extension: str | None = None
    num_repeats: int | None = field(default=None, metadata=limits(min=0))
    resolution: int | tuple[int, ...] | None = field(default=None, metadata=_RESO)
    batch_size: int | None = field(default=None, metadata=limits(min=1))
    min_bucket_reso: int | None = field(default=None, metadata=_RESO)
    max_bucket_reso: int | None = field(default=None, metadata=_RESO)
    bucket_reso_steps: int | None = field(default=None, metadata=_RESO)
    class_tokens: str | None = None
    flip_aug: bool | None = None
    random_crop: bool | None = None
    shuffle_caption: bool | None = None
    keep_tokens: int | None = field(default=None, metadata=limits(min=0))
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    alpha_mask: bool | None = None


@dataclass(frozen=True)
class DatasetFile:
    """The whole file: `[general]` and the `[[datasets]]` blocks."""

    general: General = field(default_factory=General)
    datasets: tuple[Dataset, ...] = ()


def resolution_pair(value: int | tuple[int, ...] | None, where: str) -> tuple[int, int] | None:
    """`512` or `[512, 768]` as (width, height); any other shape is one message naming the key."""
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise CharframeError(f"{where}: resolution: expected one size or [width, height], got {list(value)}")
    return int(value[0]), int(value[1])


def parse_dataset_file(data: dict[str, Any], source: Source | str) -> DatasetFile:
    """Parsed TOML as records, every value checked; resolutions checked to be one size or a pair."""
    record = parse(DatasetFile, data, source)
    src = source.path if isinstance(source, Source) else str(source)
    resolution_pair(record.general.resolution, f"{src}: [general]")
    for i, d in enumerate(record.datasets):
        resolution_pair(d.resolution, f"{src}: [[datasets]] #{i + 1}")
    return record


def read_dataset_file(path: str | os.PathLike) -> DatasetFile:
    """Read and check a dataset TOML (binary, non-UTF-8, bad TOML, bad values: one message each)."""
    data, src = read_toml_file(path, "dataset TOML", "; fix the file or run `charframe prepare` again")
    return parse_dataset_file(data, src)


def ignored_keys_set(record: Any) -> list[str]:
    """The sd-scripts-only keys a record sets (for the built-in trainer's warning)."""
    return sorted(k for k in IGNORED_KEYS if getattr(record, k, None) is not None)
