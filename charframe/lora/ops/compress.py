"""SVD compression: re-factor each module's ΔW at the rank a criterion picks, exactly and fast.

Compressing is mixing one input at weight 1 (`refactor.refactor_module`): LoRA/LoCon modules never
form ΔW (SVD through QR of the factors, cost linear in the layer size, the same singular values and
best rank-k approximation as a full SVD of ΔW); LoHa/LoKr modules have no such factors, so their
full ΔW is decomposed; the output is always plain LoRA (LoCon keys for convs).

Alpha: one alpha for the whole file, equal to the largest kept rank, so modules at that rank have
an effective scale (alpha/rank) of 1 — with a fixed rank R every module does — and every other
module's factors absorb rank/alpha so that each loader reads exactly ΔW_k. Per-module alphas
(alpha = own rank, as resize_lora writes) would be exact in kohya/WebUI/ComfyUI, but diffusers 0.42
applies a file's most common alpha to attention layers whose alpha differs (its alpha_pattern keys
do not match), which changes their ΔW; a single alpha is read the same way everywhere.

Rank rule vs sd-scripts' `networks/resize_lora.py`: there, sv_ratio keeps
`min(max(count(s > s_max/ratio), 1), len(s) - 1) + 1` values — one more than the count — and
sv_fro / sv_cumulative likewise add one to the smallest rank that reaches the target. charframe
keeps exactly the values the criterion selects (s > s_max/ratio; the smallest rank reaching the
Frobenius/cumulative target), at least 1 and at most `max_rank`, so sv_ratio 16 here gives ranks
one lower than resize_lora's dynamic_param 16 whenever the cap does not bind.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from charframe.lora import io as lio
from charframe.lora.format import FileModule, LoraNetwork
from charframe.lora.functional import RankRule
from charframe.lora.ops.refactor import DTYPES, Factored, ModuleReport, build_network, rank_metadata, refactor_module, rule_history
from charframe.lora.ops.run import apply_to_file, check_files, output_path
from charframe.util.workers import map_modules, torch_threads

log = logging.getLogger(__name__)


@dataclass
class CompressResult:
    output: Path | None
    rule: RankRule
    modules: list[ModuleReport] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def mean_rank(self) -> float:
        return sum(m.rank_out for m in self.modules) / max(1, len(self.modules))

    def summary(self) -> str:
        name = self.output.name if self.output else "(not written)"
        min_fro = min((m.fro for m in self.modules), default=1.0)
        return (
            f"{name}: {len(self.modules)} modules, {self.rule.describe()}: mean rank {self.mean_rank:.1f} "
            f"(max {max((m.rank_out for m in self.modules), default=0)}), lowest Frobenius kept {min_fro:.3f}; "
            f"{self.bytes_before / 2**20:.1f} MiB → {self.bytes_after / 2**20:.1f} MiB"
        )


def compress_module(module: FileModule, rule: RankRule) -> tuple[Factored, ModuleReport]:
    """Best rank-k factors of one module's ΔW, k chosen by `rule`: a mix of one input at weight 1."""
    return refactor_module(module.name, [(module, 1.0)], rule)


def compress_network(
    net: LoraNetwork, rule: RankRule, dtype: torch.dtype = torch.float16, *, progress: bool = False
) -> tuple[LoraNetwork, list[ModuleReport]]:
    results = map_modules(lambda m: compress_module(net.materialize(m), rule), list(net.modules.values()), "compress", progress)
    factored = {name: r[0] for name, r in zip(net.modules, results)}
    with torch_threads(1):
        return build_network(factored, dtype, net.metadata, net.source), [r[1] for r in results]


def compress_file(
    path: str | os.PathLike,
    rule: RankRule,
    *,
    dtype: str = "fp16",
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> CompressResult:
    """Compress one file into `<stem>-<criterion>.safetensors` (e.g. `-SvR16`) or `output`."""
    path = Path(path)
    out = Path(output) if output else output_path(path, rule.suffix())

    def operation(nets: list[LoraNetwork]) -> tuple[LoraNetwork, CompressResult, dict]:
        (net,) = nets
        new, reports = compress_network(net, rule, DTYPES[dtype], progress=progress)
        new.metadata = rank_metadata(new.metadata, new, was_lycoris=bool(net.kinds() - {"lora"}))
        result = CompressResult(out, rule, reports, lio.tensors_nbytes(net), lio.tensors_nbytes(new))
        return new, result, {**rule_history(rule, dtype), "mean_rank": round(result.mean_rank, 2)}

    # lazy: modules are read one at a time, so memory ≈ the output
    return apply_to_file("compress", [path], out, operation, overwrite=overwrite, lazy=True)


def compress_files(
    paths: Sequence[str | os.PathLike], rule: RankRule, *, dtype: str = "fp16", overwrite: bool = False, progress: bool = False
) -> Iterator[CompressResult]:
    """Compress each file beside itself, after checking every output first (nothing half-done)."""
    check_files(paths, [output_path(p, rule.suffix()) for p in paths], overwrite)
    for p in paths:
        yield compress_file(p, rule, dtype=dtype, overwrite=overwrite, progress=progress)
