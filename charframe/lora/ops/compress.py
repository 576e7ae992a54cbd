"""SVD compression: re-factor each module's ΔW at the rank a criterion picks, exactly and fast.

LoRA/LoCon modules never form ΔW: `functional.lowrank_svd` takes the SVD through QR of the
factors (cost linear in the layer size), which gives the same singular values and the same best
rank-k approximation as a full SVD of ΔW. LoHa/LoKr modules have no such factors, so their full ΔW
is decomposed; the output is always plain LoRA (LoCon keys for convs).

Alpha: one alpha for the whole file, equal to the largest kept rank, so modules at that rank have
an effective scale (alpha/rank) of 1 — with a fixed `--rank R` every module does — and every other
module's factors absorb rank/alpha so that each loader reads exactly ΔW_k. Per-module alphas
(alpha = own rank, as resize_lora writes) would be exact in kohya/WebUI/ComfyUI, but diffusers 0.42
applies a file's most common alpha to attention layers whose alpha differs (its alpha_pattern keys
do not match), which changes their ΔW; a single alpha is read the same way everywhere.

Rank rule vs sd-scripts' `networks/resize_lora.py`: there, sv_ratio keeps
`min(max(count(s > s_max/ratio), 1), len(s) - 1) + 1` values — one more than the count — and
sv_fro / sv_cumulative likewise add one to the smallest rank that reaches the target. charframe
keeps exactly the values the criterion selects (s > s_max/ratio; the smallest rank reaching the
Frobenius/cumulative target), at least 1 and at most `max_rank`, so `--sv-ratio 16` here gives ranks
one lower than resize_lora's `--dynamic_param 16` whenever the cap does not bind.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charframe.lora import io as lio
from charframe.lora.blocks import layer_shape
from charframe.lora.functional import (
    RankRule,
    full_svd,
    lora_factors,
    lora_tensors,
    lowrank_truncate,
    module_delta,
    retained_fro,
    select_rank,
    truncate,
)
from charframe.lora.format import LoraModule, LoraNetwork, network_args
from charframe.util.workers import map_modules, torch_threads

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class ModuleReport:
    name: str
    kind: str
    rank_in: int | None
    rank_out: int
    fro: float  # retained fraction of ‖ΔW‖_F

    def line(self) -> str:
        return f"{self.name}: {self.kind} rank {self.rank_in or '-'} → {self.rank_out}, Frobenius kept {self.fro:.4f}"


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


#: A re-factored module before storing: (up2d, down2d, layer shape), ΔW = up2d @ down2d.
Factored = tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]


def compress_module(module: LoraModule, rule: RankRule) -> tuple[Factored, ModuleReport]:
    """Best rank-k factors of one module's ΔW, k chosen by `rule`.

    LoRA/LoCon: QR-core on the factors (`lowrank_truncate`); LoHa/LoKr: SVD of the full ΔW.
    """
    t = module.tensors
    if module.kind == "lora":
        up2d, down2d, shape = lora_factors(t["lora_down.weight"], t["lora_up.weight"], t.get("alpha"), t.get("lora_mid.weight"))
        up, down, s = lowrank_truncate(up2d, down2d, lambda s: select_rank(s, rule))
    else:
        delta = module_delta(module.kind, t)
        shape = layer_shape(module.name, tuple(delta.shape))
        u, s, vh = full_svd(delta)
        up, down = truncate(u, s, vh, select_rank(s, rule))
    k = up.shape[1]
    return (up, down, shape), ModuleReport(module.name, module.kind, module.rank, k, retained_fro(s, k))


def build_network(factored: dict[str, Factored], dtype: torch.dtype, metadata: dict[str, str], source=None) -> LoraNetwork:
    """Store factored modules as plain LoRA with one file-wide alpha = the largest rank (see above)."""
    alpha = max((up.shape[1] for up, _, _ in factored.values()), default=1)
    modules = {
        name: LoraModule(name, "lora", lora_tensors(up, down, shape, dtype, alpha))
        for name, (up, down, shape) in factored.items()
    }
    return LoraNetwork(modules=modules, metadata=dict(metadata), source=source)


def compress_network(
    net: LoraNetwork, rule: RankRule, dtype: torch.dtype = torch.float16, *, progress: bool = False
) -> tuple[LoraNetwork, list[ModuleReport]]:
    results = map_modules(lambda m: compress_module(net.materialize(m), rule), list(net.modules.values()), "compress", progress)
    factored = {name: r[0] for name, r in zip(net.modules, results)}
    with torch_threads(1):
        return build_network(factored, dtype, net.metadata, net.source), [r[1] for r in results]


def rank_metadata(metadata: dict[str, str], rule: RankRule, net: LoraNetwork, was_lycoris: bool) -> dict[str, str]:
    """ss_network_* after re-factoring: dim "Dynamic" when ranks differ (as resize_lora writes), the alpha."""
    md = dict(metadata)
    ranks = {m.rank for m in net.modules.values()}
    dim = str(ranks.pop()) if len(ranks) == 1 else "Dynamic"
    alpha = f"{max((m.alpha or 0 for m in net.modules.values()), default=0):g}"
    md["ss_network_dim"] = dim
    md["ss_network_alpha"] = alpha
    args = network_args(md)
    if was_lycoris:
        args["algo"] = "locon"
    if any(m.kernel not in ((), (1, 1)) for m in net.modules.values()) or "conv_dim" in args:
        args["conv_dim"] = dim
        args["conv_alpha"] = alpha
    if args or "ss_network_args" in md:
        md["ss_network_args"] = json.dumps(args)
    return md


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
    out = Path(output) if output else lio.output_path(path, rule.suffix())
    lio.check_outputs([out], overwrite)
    net = lio.read_network(path, lazy=True)  # modules are read one at a time: memory ≈ output
    new, reports = compress_network(net, rule, DTYPES[dtype], progress=progress)
    md = rank_metadata(new.metadata, rule, new, was_lycoris=bool(net.kinds() - {"lora"}))
    if "ss_output_name" in md:
        md["ss_output_name"] = out.stem
    new.metadata = lio.with_history(
        md,
        "compress",
        rule=rule.kind,
        value=rule.value,
        max_rank=rule.max_rank,
        dtype=dtype,
        mean_rank=round(sum(r.rank_out for r in reports) / max(1, len(reports)), 2),
        **lio.source_entry(net),
    )
    result = CompressResult(out, rule, reports, lio.tensors_nbytes(net), lio.tensors_nbytes(new))
    result.output = lio.write_network(out, new)
    return result
