"""The one path every file operation takes: check the output → read → operate → history → check → write.

merge, compress and mix differ only in the operation; refusing a bad output before any work,
reading through the one checked reader, recording provenance and never writing NaN/Inf live here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from charframe.lora import io as lio
from charframe.lora.format import LoraNetwork

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

    One input's file name and hash go into the history entry (several inputs name themselves in the
    op's details); `ss_output_name` follows the output when the input had one, or always with
    `name_output`.
    """
    lio.check_outputs([output], overwrite)
    nets = [lio.read_network(p, lazy=lazy) for p in inputs]
    new, result, details = operation(nets)
    md = dict(new.metadata)
    if name_output or "ss_output_name" in md:
        md["ss_output_name"] = output.stem
    if len(nets) == 1:
        details = {**details, **lio.source_entry(nets[0])}
    new.metadata = lio.with_history(md, op, **details)
    lio.check_finite(new, output)
    lio.write_network(output, new)
    return result
