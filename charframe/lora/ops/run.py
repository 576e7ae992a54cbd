"""The one path every file operation takes: check the output → read → operate → history → check → write.

merge, compress and mix differ only in the operation; naming outputs, refusing a bad output before
any work, reading through the one checked reader, recording provenance and never writing NaN/Inf
live here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from charframe.errors import CharframeError
from charframe.lora import io as lio
from charframe.lora.format import LoraNetwork, validate_values
from charframe.util.workers import torch_threads

#: Longest file name (bytes) common file systems accept (ext4, NTFS, APFS).
NAME_MAX = 255

R = TypeVar("R")

#: An operation: input networks → (new network, the op's result, its history details).
Operation = Callable[[list[LoraNetwork]], tuple[LoraNetwork, R, dict[str, Any]]]


def apply_to_file(
    op: str,
    inputs: Sequence[Path],
    output: Path,
    operation: Operation,
    *,
    overwrite: bool = False,
    lazy: bool = False,
    name_output: bool = False,
) -> R:
    """Run `operation` on the files `inputs` and write its network to `output`; return its result.

    A single input's file name and hash go into the history entry unless the op's details name
    its `inputs` itself (mix); `ss_output_name` follows the output when the input had one, or
    always with `name_output`.
    """
    check_files(inputs, [output], overwrite)
    nets = [lio.read_network(p, lazy=lazy) for p in inputs]
    new, result, details = operation(nets)
    if not new.bundle:  # bundled embeddings go through every operation unchanged (the first input's name wins)
        new.bundle = {k: v for net in reversed(nets) for k, v in net.bundle.items()}
    md = dict(new.metadata)
    if name_output or "ss_output_name" in md:
        md["ss_output_name"] = output.stem
    if len(nets) == 1 and "inputs" not in details:
        details = {**details, **source_entry(nets[0])}
    new.metadata = lio.with_history(md, op, **details)
    check_finite(new, output)
    lio.write_network(output, new)
    return result


def output_path(source: str | os.PathLike, label: str, folder: str | os.PathLike | None = None) -> Path:
    """`<stem>-<label>.safetensors` beside `source` (or in `folder`); a label never leaves that folder."""
    source = Path(source)
    if any(sep in label for sep in ("/", "\\", os.sep)) or label in ("", ".", ".."):
        raise CharframeError(f"'{label}' cannot be part of an output file name (it holds a path separator)")
    return Path(folder or source.parent) / f"{source.stem}-{label}.safetensors"


def check_files(inputs: Sequence[str | os.PathLike], outputs: list[Path], overwrite: bool) -> None:
    """Inputs first (a missing input is named as missing, not as a missing output folder), then outputs."""
    for p in inputs:
        lio.check_input_file(Path(p))
    check_outputs(outputs, overwrite)


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """Refuse, before any work is done, outputs that cannot or must not be written.

    Each output's folder must exist (nothing is created silently), its name must fit the file
    system, it must not be a folder, and an existing file is replaced only with `overwrite`.
    """
    for p in paths:
        if len(p.name.encode("utf-8")) > NAME_MAX:
            raise CharframeError(
                f"{p.parent}: output name {p.name[:40]}… is {len(p.name.encode('utf-8'))} bytes, longer than the "
                f"{NAME_MAX} a file name may have; shorten the input's name or choose a shorter output"
            )
        if not p.parent.is_dir():
            what = "is not a folder" if p.parent.exists() else "does not exist"
            raise CharframeError(f"{p}: the output folder {p.parent} {what}; create it first or choose another output")
        if p.is_dir():
            raise CharframeError(f"{p}: is a folder; give an output file name (…/name.safetensors)")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise CharframeError(
            f"output exists: {', '.join(existing)}; pass {{param}} to replace it, or move it away", param="overwrite"
        )
    clash = {p for p in paths if paths.count(p) > 1}
    if clash:
        raise CharframeError(f"two inputs would write the same output: {', '.join(map(str, sorted(clash)))}")


def check_finite(net: LoraNetwork, output: Path) -> None:
    """Refuse to write a result holding NaN/Inf (e.g. weights too large for the stored precision)."""
    with torch_threads(1):
        for module in net.modules.values():
            try:
                validate_values(module, output)
            except CharframeError as e:
                raise CharframeError(f"{e}; nothing written (are the weights too large for the stored precision?)") from None


def source_entry(net: LoraNetwork) -> dict[str, str]:
    """How a history entry names its input: file name and its sshs_model_hash (when known)."""
    entry = {"source": net.source.name if net.source else "?"}
    if lio.MODEL_HASH_KEY in net.metadata:
        entry["source_hash"] = net.metadata[lio.MODEL_HASH_KEY]
    return entry
