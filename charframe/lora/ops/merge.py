"""Block-weight merge: scale each module's ΔW by its block's weight, drop blocks weighted 0.

Unlike the WebUI tool (0/1 only for LyCORIS), any real weight works for every network type,
because ΔW is linear in one factor of each kind (see `functional.scale_module`). A preset or weight list
is read for each file's family (`lora.file_family`): FACE on an SDXL LoRA is SDXL's FACE, and a
12-weight SDXL list given for an SD1.x LoRA is refused naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.lora import io as lio
from charframe.lora.blocks import BLOCK_IDS, module_weights, resolve_weights
from charframe.lora.format import FileModule, LoraNetwork
from charframe.lora.functional import scale_module
from charframe.lora.keys import block_of
from charframe.lora.ops.run import apply_to_file, check_files, output_path
from charframe.project import find_project_root
from charframe.util.workers import torch_threads

log = logging.getLogger(__name__)


@dataclass
class MergeResult:
    """What one merge did, for the summary line and for tests."""

    output: Path | None
    label: str
    weights: tuple[float, ...]
    kept: int = 0
    scaled: int = 0
    dropped: int = 0
    outside: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0

    def summary(self) -> str:
        name = self.output.name if self.output else "(not written)"
        return (
            f"{name}: {self.kept} modules kept ({self.scaled} scaled), {self.dropped} dropped; "
            f"{self.bytes_before / 2**20:.1f} MiB → {self.bytes_after / 2**20:.1f} MiB"
        )


def merge_network(
    net: LoraNetwork, weights: Sequence[float], *, progress: bool = False
) -> tuple[LoraNetwork, MergeResult]:
    """A new network with every module scaled by its block weight (weight 0 drops the module)."""
    from tqdm import tqdm

    if len(weights) != len(BLOCK_IDS):
        raise ValueError(f"merge_network needs {len(BLOCK_IDS)} weights, got {len(weights)}")
    per_module, outside = module_weights(net.modules, weights)
    result = MergeResult(output=None, label="", weights=tuple(weights), outside=outside)
    modules: dict[str, FileModule] = {}
    with torch_threads(1):  # tiny element-wise ops: threads only add contention
        for name, module in tqdm(net.modules.items(), desc="merge", unit="module", disable=not progress):
            w = per_module[name]
            if w == 0:
                result.dropped += 1
                continue
            tensors = module.tensors if w == 1 else scale_module(module.kind, module.tensors, w)
            result.scaled += w != 1
            modules[name] = FileModule(name, module.kind, tensors, module.conv1x1)
    result.kept = len(modules)
    result.bytes_before = lio.tensors_nbytes(net)
    merged = LoraNetwork(modules=modules, metadata=dict(net.metadata), source=net.source, family=net.family)
    result.bytes_after = lio.tensors_nbytes(merged)
    return merged, result


def warn_outside(outside: list[str], source: os.PathLike | str, family: str | None = None) -> None:
    """One warning naming every module that belongs to no block of the family (they keep weight 1)."""
    if outside:
        log.warning(
            "%s: %d module(s) belong to no %s block and keep weight 1: %s",
            source, len(outside), get_family(family).name, ", ".join(outside),
        )


def merge_file(
    path: str | os.PathLike,
    weights: Sequence[float],
    label: str,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> MergeResult:
    """Merge one file with 26 block weights into `<stem>-<label>.safetensors` (or `output`)."""
    path = Path(path)
    out = Path(output) if output else output_path(path, label)

    def operation(nets: list[LoraNetwork]) -> tuple[LoraNetwork, MergeResult, dict]:
        (net,) = nets
        merged, result = merge_network(net, weights, progress=progress)
        warn_outside(result.outside, path, net.family)
        if not merged.modules:
            raise CharframeError(f"{path}: preset {label} removes every module; nothing to write")
        result.output, result.label = out, label
        blocks_seen = sorted({block_of(n) or "-" for n in net.modules} - {"-"}, key=_block_order)
        return merged, result, {"preset": label, "weights": dict(zip(BLOCK_IDS, weights)), "blocks_in_file": blocks_seen}

    return apply_to_file("merge", [path], out, operation, overwrite=overwrite)


def merge_files(
    paths: Sequence[str | os.PathLike],
    preset: str,
    *,
    preset_files: Iterable[str | os.PathLike] = (),
    project_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Iterator[MergeResult]:
    """Merge each file with a preset name or weight list, beside itself.

    The preset is resolved for each file's family (shipped presets, the project's charframe.toml — the
    project found from the first file unless `project_root` is given — then `preset_files`) and every
    output is checked before the first merge, so a refusal leaves nothing half-done.
    """
    root = find_project_root(paths[0]) if project_root is None else project_root
    check_files(paths, [], overwrite)
    resolved = [_resolve_for(Path(p), preset, root, preset_files) for p in paths]
    check_files(paths, [output_path(p, label) for p, (label, _) in zip(paths, resolved)], overwrite)
    for p, (label, weights) in zip(paths, resolved):
        yield merge_file(p, weights, label, overwrite=overwrite, progress=progress)


def _resolve_for(path: Path, preset: str, root, preset_files) -> tuple[str, tuple[float, ...]]:
    """The preset's label and weights for the family of the LoRA at `path` (its header is read)."""
    family = lio.read_network(path, lazy=True).family if path.suffix.lower() == ".safetensors" else None
    try:
        return resolve_weights(preset, root, preset_files, family)
    except CharframeError as e:
        if family is None:
            raise
        raise CharframeError(f"{path}: an {get_family(family).name} LoRA: {e.template}", param=e.param) from None


def _block_order(block: str) -> int:
    return BLOCK_IDS.index(block)
