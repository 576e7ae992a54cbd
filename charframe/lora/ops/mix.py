"""Mix LoRAs: one LoRA whose ΔW is Σ wᵢ·ΔWᵢ, re-factored exactly (`refactor.refactor_module`).

Without a rank rule every non-negligible singular value is kept, so the result equals the weighted
sum; a fixed rank or sv_ratio truncates it. This is the "two characters together without a group
LoRA" path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.lora import io as lio
from charframe.lora.blocks import checked_weight
from charframe.lora.format import FileModule, LoraNetwork
from charframe.lora.functional import RankRule
from charframe.lora.ops.refactor import DTYPES, Factored, ModuleReport, build_network, rank_metadata, refactor_module, rule_history
from charframe.lora.ops.run import apply_to_file, source_entry
from charframe.util.workers import map_modules, torch_threads

log = logging.getLogger(__name__)

#: One module of the mix is the shared re-factoring over the inputs that hold it.
mix_module = refactor_module


def parse_mix_arg(text: str) -> tuple[Path, float]:
    """'A.safetensors:0.7' → (path, 0.7); no ':weight' means 1. Windows drive colons are kept.

    A tail after the last ':' that is not a number is an error (not a file name), unless a file
    of exactly that name exists.
    """
    head, sep, tail = text.rpartition(":")
    if not sep or not head or "\\" in tail or "/" in tail:
        return Path(text), 1.0
    try:
        weight = float(tail)
    except ValueError:
        if Path(text).exists():
            return Path(text), 1.0
        raise CharframeError(f"{text}: the weight '{tail}' is not a number; write FILE:WEIGHT, e.g. a.safetensors:0.7") from None
    return Path(head), _checked(text, weight)


def _checked(name: str | os.PathLike, weight: float) -> float:
    try:
        return checked_weight(weight, "the weight")
    except ValueError as e:
        raise CharframeError(f"{name}: {e}") from None


@dataclass
class MixResult:
    output: Path | None
    inputs: list[tuple[Path, float]]
    rule: RankRule
    modules: list[ModuleReport] = field(default_factory=list)

    def summary(self) -> str:
        mean = sum(m.rank_out for m in self.modules) / max(1, len(self.modules))
        parts = " + ".join(f"{w:g}·{p.name}" for p, w in self.inputs)
        name = self.output.name if self.output else "(not written)"
        return f"{name}: {parts}: {len(self.modules)} modules, {self.rule.describe()}, mean rank {mean:.1f}"


def mix_networks(
    items: Sequence[tuple[LoraNetwork, float]],
    rule: RankRule = RankRule("all", 0, None),
    dtype: torch.dtype = torch.float16,
    *,
    progress: bool = False,
) -> tuple[LoraNetwork, list[ModuleReport]]:
    """The weighted sum of networks, module by module (modules only some inputs have are kept)."""
    names: dict[str, list[tuple[LoraNetwork, FileModule, float]]] = {}
    for net, w in items:
        for name, module in net.modules.items():
            names.setdefault(name, []).append((net, module, w))

    def one(name: str, parts: list) -> tuple[Factored, ModuleReport]:
        return mix_module(name, [(net.materialize(m), w) for net, m, w in parts], rule)

    results = map_modules(lambda kv: one(*kv), list(names.items()), "mix", progress)
    factored = {name: r[0] for name, r in zip(names, results)}
    with torch_threads(1):
        return build_network(factored, dtype, _common_metadata([n for n, _ in items])), [r[1] for r in results]


def _common_metadata(nets: Sequence[LoraNetwork]) -> dict[str, str]:
    """ss_* keys on which all inputs agree (base model, resolution …); the rest would mislead."""
    first = nets[0].metadata
    return {
        k: v for k, v in first.items()
        if k.startswith("ss_") and all(n.metadata.get(k) == v for n in nets[1:])
    }  # fmt: skip


def check_one_family(nets: Sequence[LoraNetwork]) -> None:
    """Refuse LoRAs of different model families (their layers differ; a mix would mean nothing)."""
    known = [n for n in nets if n.family is not None]
    other = next((n for n in known if n.family != known[0].family), None)
    if other is not None:
        first = known[0]
        raise CharframeError(
            f"{other.source}: is an {get_family(other.family).name} LoRA and {first.source} an "
            f"{get_family(first.family).name} LoRA; LoRAs of different model families cannot be mixed"
        )


def default_mix_output(inputs: Sequence[tuple[Path, float]]) -> Path:
    """`<stemA>+<stemB>-mix.safetensors` beside the first input."""
    first = inputs[0][0]
    return first.parent / ("+".join(p.stem for p, _ in inputs) + "-mix.safetensors")


def mix_files(
    inputs: Sequence[tuple[str | os.PathLike, float]],
    *,
    output: str | os.PathLike | None = None,
    rule: RankRule = RankRule("all", 0, None),
    dtype: str = "fp16",
    overwrite: bool = False,
    progress: bool = False,
) -> MixResult:
    """Mix files with weights into `output` (default `<A>+<B>-mix.safetensors` beside A)."""
    inputs = [(Path(p), _checked(p, w)) for p, w in inputs]
    if len(inputs) < 1:
        raise CharframeError("mix needs at least one input FILE:WEIGHT")
    out = Path(output) if output else default_mix_output(inputs)
    weights = [w for _, w in inputs]

    def operation(nets: list[LoraNetwork]) -> tuple[LoraNetwork, MixResult, dict]:
        check_one_family(nets)
        new, reports = mix_networks(list(zip(nets, weights)), rule, DTYPES[dtype], progress=progress)
        was_lycoris = any(n.kinds() - {"lora"} for n in nets)
        new.metadata = rank_metadata(new.metadata, new, was_lycoris=was_lycoris)
        sources = [dict(source_entry(n), weight=w) for n, w in zip(nets, weights)]
        return new, MixResult(out, inputs, rule, reports), {"inputs": sources, **rule_history(rule, dtype)}

    return apply_to_file("mix", [p for p, _ in inputs], out, operation, overwrite=overwrite, lazy=True, name_output=True)
