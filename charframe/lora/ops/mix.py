"""Mix LoRAs: one LoRA whose ΔW is Σ wᵢ·ΔWᵢ, re-factored exactly.

For LoRA/LoCon inputs the factors are stacked ([w₁up₁ | w₂up₂], [down₁; down₂]) and re-factored
through QR (`functional.lowrank_svd`), so no full matrix is formed; a module that any input holds as
LoHa/LoKr is summed as full ΔW and decomposed. Without a rank rule every non-negligible singular
value is kept, so the result equals the weighted sum; `--rank`/`--sv-ratio` truncate it. This is
the "two characters together without a group LoRA" path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from charframe.errors import CharframeError
from charframe.lora import io as lio
from charframe.lora.blocks import layer_shape
from charframe.lora.ops.compress import DTYPES, Factored, ModuleReport, build_network, rank_metadata
from charframe.lora.functional import (
    RankRule,
    full_svd,
    lora_factors,
    lowrank_truncate,
    module_delta,
    retained_fro,
    select_rank,
    stack_factors,
    truncate,
)
from charframe.lora.format import LoraModule, LoraNetwork
from charframe.util.workers import map_modules, torch_threads

log = logging.getLogger(__name__)


def parse_mix_arg(text: str) -> tuple[Path, float]:
    """'A.safetensors:0.7' → (path, 0.7); no ':weight' means 1. Windows drive colons are kept."""
    head, sep, tail = text.rpartition(":")
    if sep and head and "\\" not in tail and "/" not in tail:
        try:
            return Path(head), float(tail)
        except ValueError:
            pass
    return Path(text), 1.0


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


def mix_module(name: str, parts: Sequence[tuple[LoraModule, float]], rule: RankRule) -> tuple[Factored, ModuleReport]:
    """Σ w·ΔW of one module over the inputs that hold it, re-factored at the rank `rule` picks."""
    factors, deltas, shapes = [], [], set()
    for module, w in parts:
        t = module.tensors
        if module.kind == "lora":
            up2d, down2d, shape = lora_factors(t["lora_down.weight"], t["lora_up.weight"], t.get("alpha"), t.get("lora_mid.weight"))
            factors.append((up2d, down2d, w))
        else:
            delta = module_delta(module.kind, t)
            shape = layer_shape(name, tuple(delta.shape))
            deltas.append(delta.reshape(delta.shape[0], -1) * w)
        shapes.add(tuple(shape))
    if len(shapes) != 1:
        raise CharframeError(f"module {name}: the inputs disagree on its layer shape {sorted(shapes)}; mix LoRAs of the same base model")
    shape = shapes.pop()
    if deltas:  # some input has no low-rank factors: sum full matrices
        total = sum(deltas) + sum(up @ down * w for up, down, w in factors)
        u, s, vh = full_svd(total)
        up, down = truncate(u, s, vh, select_rank(s, rule))
    else:
        up, down, s = lowrank_truncate(*stack_factors(factors), lambda s: select_rank(s, rule))
    k = up.shape[1]
    rank_in = sum(m.rank or 0 for m, _ in parts)
    report = ModuleReport(name, "+".join(m.kind for m, _ in parts), rank_in, k, retained_fro(s, k))
    return (up, down, shape), report


def mix_networks(
    items: Sequence[tuple[LoraNetwork, float]],
    rule: RankRule = RankRule("all", 0, None),
    dtype: torch.dtype = torch.float16,
    *,
    progress: bool = False,
) -> tuple[LoraNetwork, list[ModuleReport]]:
    """The weighted sum of networks, module by module (modules only some inputs have are kept)."""
    names: dict[str, list[tuple[LoraNetwork, LoraModule, float]]] = {}
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
    inputs = [(Path(p), float(w)) for p, w in inputs]
    if len(inputs) < 1:
        raise CharframeError("mix needs at least one input FILE:WEIGHT")
    out = Path(output) if output else default_mix_output(inputs)
    lio.check_outputs([out], overwrite)
    nets = [(lio.read_network(p, lazy=True), w) for p, w in inputs]
    new, reports = mix_networks(nets, rule, DTYPES[dtype], progress=progress)
    was_lycoris = any(n.kinds() - {"lora"} for n, _ in nets)
    md = rank_metadata(new.metadata, rule, new, was_lycoris=was_lycoris)
    md["ss_output_name"] = out.stem
    new.metadata = lio.with_history(
        md,
        "mix",
        inputs=[dict(lio.source_entry(n), weight=w) for n, w in nets],
        rule=rule.kind,
        value=rule.value,
        max_rank=rule.max_rank,
        dtype=dtype,
    )
    return MixResult(lio.write_network(out, new), inputs, rule, reports)
