"""Re-factoring by SVD, shared by compress and mix: Σ wᵢ·ΔWᵢ of one module at the rank a rule picks.

Compress is the one-input case at weight 1. LoRA/LoCon inputs never form ΔW: their factors are
stacked ([w₁up₁ | w₂up₂], [down₁; down₂]) and re-factored through QR (`functional.lowrank_truncate`),
which gives the same singular values and best rank-k approximation as a full SVD at a cost linear in
the layer size. A module that any input holds as LoHa/LoKr is summed as full ΔW and decomposed. The
output is always plain LoRA (LoCon keys for convs) with one file-wide alpha (see `build_network`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import torch

from charframe.errors import CharframeError
from charframe.lora.format import FileModule, LoraNetwork, network_args
from charframe.lora.functional import (
    RankRule,
    full_svd,
    lora_factors,
    lora_tensors,
    lowrank_truncate,
    module_delta,
    retained_fro,
    select_rank,
    stack_factors,
    truncate,
)
from charframe.lora.keys import layer_shape

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

#: A re-factored module before storing: (up2d, down2d, layer shape), ΔW = up2d @ down2d.
Factored = tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]


@dataclass
class ModuleReport:
    name: str
    kind: str
    rank_in: int | None
    rank_out: int
    fro: float  # retained fraction of ‖ΔW‖_F

    def line(self) -> str:
        return f"{self.name}: {self.kind} rank {self.rank_in or '-'} → {self.rank_out}, Frobenius kept {self.fro:.4f}"


def refactor_module(name: str, parts: Sequence[tuple[FileModule, float]], rule: RankRule) -> tuple[Factored, ModuleReport]:
    """Σ w·ΔW of one module over the inputs that hold it, re-factored at the rank `rule` picks."""
    factors, deltas, shapes = [], [], set()
    for module, w in parts:
        t = module.tensors
        if module.kind == "lora":
            up2d, down2d, shape = lora_factors(t["lora_down.weight"], t["lora_up.weight"], t.get("alpha"), t.get("lora_mid.weight"))
            factors.append((up2d, down2d, w))
        else:
            delta = module_delta(module.kind, t)
            shape = layer_shape(name, tuple(delta.shape), module.conv1x1)
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
    ranks = [m.rank for m, _ in parts]
    rank_in = None if all(r is None for r in ranks) else sum(r or 0 for r in ranks)
    report = ModuleReport(name, "+".join(m.kind for m, _ in parts), rank_in, k, retained_fro(s, k))
    return (up, down, shape), report


def build_network(factored: dict[str, Factored], dtype: torch.dtype, metadata: dict[str, str], source=None) -> LoraNetwork:
    """Store factored modules as plain LoRA with one file-wide alpha = the largest kept rank.

    Modules at that rank get an effective scale (alpha/rank) of 1, every other module's factors
    absorb rank/alpha, so each loader reads exactly ΔW_k. Per-module alphas would be exact in
    kohya/WebUI/ComfyUI, but diffusers 0.42 applies a file's most common alpha to attention layers
    whose alpha differs; a single alpha is read the same way everywhere.
    """
    alpha = max((up.shape[1] for up, _, _ in factored.values()), default=1)
    modules = {
        name: FileModule(name, "lora", lora_tensors(up, down, shape, dtype, alpha))
        for name, (up, down, shape) in factored.items()
    }
    return LoraNetwork(modules=modules, metadata=dict(metadata), source=source)


def rank_metadata(metadata: dict[str, str], net: LoraNetwork, was_lycoris: bool) -> dict[str, str]:
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


def rule_history(rule: RankRule, dtype: str) -> dict:
    """How a history entry records the rank rule and the stored precision."""
    return {"rule": rule.kind, "value": rule.value, "max_rank": rule.max_rank, "dtype": dtype}
