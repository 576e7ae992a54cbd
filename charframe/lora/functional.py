"""Pure tensor math of LoRA-family modules: ΔW, exact scaling, low-rank SVD, rank rules, stacking.

Modules are passed as `{suffix: tensor}` maps with the kohya/LyCORIS suffixes (`lora_down.weight`,
`hada_w1_a`, `lokr_w1`, `alpha`, …), so nothing here knows about files. All arithmetic is float32;
callers cast results to the dtype they store.

Conventions (kohya sd-scripts / LyCORIS, as the WebUI and ComfyUI apply them):

- LoRA/LoCon: ΔW = (alpha / r) · up · down, conv kernels living in `down` (r × in × k × k) and
  `up` being 1x1; a LyCORIS Tucker core `lora_mid` (r × r × k × k) sits between 1x1 down and up.
- LoHa: ΔW = (alpha / r) · (w1_a · w1_b) ⊙ (w2_a · w2_b), or with Tucker cores t1/t2 each half is
  rebuilt as t ×₁ w_aᵀ ×₂ w_bᵀ (w_a, w_b are then r × out and r × in).
- LoKr: ΔW = (alpha / r) · w1 ⊗ w2 with w1 = w1_a · w1_b and w2 = w2_a · w2_b (or the Tucker form
  with t2); the scale is 1 when neither half is factored (no rank to divide by).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from charframe.errors import CharframeError

Tensors = Mapping[str, torch.Tensor]


def _scale(alpha: torch.Tensor | float | None, rank: int | None) -> float:
    if alpha is None or not rank:
        return 1.0
    return float(alpha) / rank


def lora_delta(down: torch.Tensor, up: torch.Tensor, alpha=None, mid: torch.Tensor | None = None) -> torch.Tensor:
    """ΔW of a kohya LoRA / LyCORIS LoCon module, in the layer's weight shape."""
    up2d, down2d, shape = lora_factors(down, up, alpha, mid)
    return (up2d @ down2d).reshape(shape)


def lora_factors(down, up, alpha=None, mid=None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """(up·scale as out×r, down as r×(in·k·k), weight shape): ΔW = up2d @ down2d, never formed here.

    A Tucker `mid` is folded into the down factor, so every LoRA/LoCon module becomes plain up/down.
    """
    rank = down.shape[0]
    up2d = up.float().reshape(up.shape[0], -1) * _scale(alpha, rank)
    down_f = down.float()
    if mid is not None:  # (r×r×k×k core) ∘ (r×in 1x1 down) → r × in × k × k
        down_f = torch.einsum("ijkl,jn->inkl", mid.float(), down_f.reshape(rank, -1))
    shape = (up.shape[0], *down_f.shape[1:])
    return up2d, down_f.reshape(down_f.shape[0], -1), shape


def _tucker(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """t (r×r×k×k) with wa (r×out) on axis 0 and wb (r×in) on axis 1 → out × in × k × k."""
    return torch.einsum("ijkl,ip,jq->pqkl", t.float(), wa.float(), wb.float())


def loha_delta(w1a, w1b, w2a, w2b, alpha=None, t1=None, t2=None) -> torch.Tensor:
    """ΔW of a LyCORIS LoHa module (flat out × in·k·k unless Tucker cores give the kernel)."""
    scale = _scale(alpha, w1b.shape[0])
    if t1 is not None:
        return _tucker(t1, w1a, w1b) * _tucker(t2, w2a, w2b) * scale
    return (w1a.float() @ w1b.float()) * (w2a.float() @ w2b.float()) * scale


def lokr_delta(w1=None, w1a=None, w1b=None, w2=None, w2a=None, w2b=None, t2=None, alpha=None) -> torch.Tensor:
    """ΔW of a LyCORIS LoKr module: scale · kron(w1, w2)."""
    rank = w1b.shape[0] if w1b is not None else w2b.shape[0] if w2b is not None else None
    left = w1.float() if w1 is not None else w1a.float() @ w1b.float()
    if w2 is not None:
        right = w2.float()
    elif t2 is not None:
        right = _tucker(t2, w2a, w2b).contiguous()
    else:
        right = (w2a.float() @ w2b.float().reshape(w2b.shape[0], -1)).reshape(w2a.shape[0], *w2b.shape[1:])
    while left.dim() < right.dim():
        left = left.unsqueeze(-1)
    return torch.kron(left, right) * _scale(alpha, rank)


def module_delta(kind: str, t: Tensors) -> torch.Tensor:
    """ΔW of one module given its kind and `{suffix: tensor}` map."""
    a = t.get("alpha")
    if kind == "lora":
        return lora_delta(t["lora_down.weight"], t["lora_up.weight"], a, t.get("lora_mid.weight"))
    if kind == "loha":
        return loha_delta(t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"], a, t.get("hada_t1"), t.get("hada_t2"))
    if kind == "lokr":
        g = t.get
        return lokr_delta(g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b"), g("lokr_w2"), g("lokr_w2_a"), g("lokr_w2_b"), g("lokr_t2"), a)
    raise ValueError(f"unknown module kind {kind!r}")


#: The one factor whose scaling scales ΔW linearly, per kind (first present key wins).
SCALED_KEY: dict[str, tuple[str, ...]] = {
    "lora": ("lora_up.weight",),
    "loha": ("hada_w1_a",),
    "lokr": ("lokr_w1", "lokr_w1_a"),
}


def scale_module(kind: str, t: Tensors, factor: float) -> dict[str, torch.Tensor]:
    """Copy of the module whose ΔW is exactly `factor` · ΔW (any real factor, negative too).

    ΔW is linear in exactly one factor of each kind (LoRA's up, LoHa's w1_a, LoKr's w1 or w1_a),
    so scaling that factor is exact; alpha is left alone because tools round or ignore it.
    """
    key = next(k for k in SCALED_KEY[kind] if k in t)
    out = dict(t)
    out[key] = (t[key].float() * factor).to(t[key].dtype)
    return out


def lowrank_svd(up2d: torch.Tensor, down2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, Vh) of up2d @ down2d without forming that product (explicit-Q form).

    up = Qu·Ru and downᵀ = Qd·Rd (reduced QR), so up·down = Qu·(Ru·Rdᵀ)·Qdᵀ; the SVD of the small
    core Ru·Rdᵀ = Uc·S·Vcᵀ gives U = Qu·Uc and V = Qd·Vc. The singular values are those of the full
    product (identical to a full SVD up to rounding) at a cost linear in the layer size.
    `lowrank_truncate` is the faster form used by compress and mix.
    """
    qu, ru = torch.linalg.qr(up2d.float())
    qd, rd = torch.linalg.qr(down2d.float().T)
    uc, s, vch = torch.linalg.svd(ru @ rd.T, full_matrices=False)
    return qu @ uc, s, vch @ qd.T


def lowrank_truncate(
    up2d: torch.Tensor, down2d: torch.Tensor, pick_rank: Callable[[torch.Tensor], int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best rank-k factors (up_k, down_k) of up2d @ down2d and all its singular values, k = pick_rank(S).

    Same QR-core as `lowrank_svd`, but only the R factors are computed (Q is never formed): with
    core = Ru·Rdᵀ = Uc·S·Vcᵀ, the identities Qu·Uc_k = up·Rdᵀ·Vc_k·S_k⁻¹ and
    Vc_kᵀ·Qdᵀ = S_k⁻¹·Uc_kᵀ·Ru·down give U_k·√S_k and √S_k·Vh_k from two thin products, dividing
    only by the kept (largest) singular values.
    """
    up, down = up2d.float(), down2d.float()
    ru = torch.linalg.qr(up, mode="r")[1]
    rd = torch.linalg.qr(down.T, mode="r")[1]
    uc, s, vch = torch.linalg.svd(ru @ rd.T, full_matrices=False)
    k = pick_rank(s)
    if float(s[0]) <= 0.0:  # ΔW = 0: a rank-1 zero module
        return up.new_zeros(up.shape[0], 1), down.new_zeros(1, down.shape[1]), s
    inv_root = s[:k].clamp_min(float(s[0]) * 1e-30).rsqrt()
    up_k = up @ (rd.T @ vch[:k].T * inv_root)
    down_k = (inv_root[:, None] * (uc[:, :k].T @ ru)) @ down
    return up_k, down_k, s


def full_svd(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a full ΔW flattened to out × (in·k·k) (used for LoHa/LoKr, and as the reference)."""
    return torch.linalg.svd(delta.float().reshape(delta.shape[0], -1), full_matrices=False)


ALL_RTOL = 1e-6
#: What each rank rule's value must be (checked on finite values only).
_RULE_VALUES: dict[str, tuple[Callable[[float], bool], str]] = {
    "sv_ratio": (lambda v: v >= 1, "a number ≥ 1"),
    "sv_fro": (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
    "sv_cumulative": (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
    "rank": (lambda v: v >= 1 and float(v).is_integer(), "a positive whole number"),
    "all": (lambda v: True, "anything"),
}


class RuleError(CharframeError, ValueError):
    """A bad rank-rule value; `param` is the rule's keyword (sv_ratio, rank, max_rank …)."""


@dataclass(frozen=True)
class RankRule:
    """How many singular values to keep.

    kind: "sv_ratio" (keep s > s_max / value), "sv_fro" (smallest rank whose retained Frobenius
    fraction ≥ value), "sv_cumulative" (smallest rank whose share of Σs ≥ value), "rank" (fixed
    rank = value), or "all" (keep every singular value above ALL_RTOL·s_max: exact re-factoring
    up to float32 rounding).
    Dynamic kinds keep at least 1 and at most `max_rank` values.
    """

    kind: str = "sv_ratio"
    value: float = 16.0
    max_rank: int | None = 128

    def __post_init__(self) -> None:
        if self.kind not in _RULE_VALUES:
            raise ValueError(f"unknown rank rule {self.kind!r}; known: {', '.join(_RULE_VALUES)}")
        ok, what = _RULE_VALUES[self.kind]
        if self.kind != "all" and not (math.isfinite(self.value) and ok(self.value)):
            raise RuleError(f"{{param}} must be {what}, not {self.value:g}", param=self.kind)
        if self.max_rank is not None and self.max_rank < 1:
            raise RuleError(f"{{param}} must be at least 1, not {self.max_rank}", param="max_rank")

    def suffix(self) -> str:
        """File-name suffix naming the criterion: SvR16, SvFro0.9, SvCum0.9, Rank32, Full."""
        v = f"{self.value:g}"
        return {"sv_ratio": f"SvR{v}", "sv_fro": f"SvFro{v}", "sv_cumulative": f"SvCum{v}", "rank": f"Rank{v}", "all": "Full"}[self.kind]

    def describe(self) -> str:
        cap = f", max rank {self.max_rank}" if self.max_rank and self.kind not in ("rank", "all") else ""
        return f"{self.kind} {self.value:g}{cap}" if self.kind != "all" else "all singular values"


def select_rank(s: torch.Tensor, rule: RankRule) -> int:
    """Kept rank for descending singular values `s` under `rule` (see RankRule; never below 1)."""
    n = int(s.numel())
    s = s.double()
    if n == 0:
        return 1
    if rule.kind == "rank":
        return max(1, min(int(rule.value), n))
    if rule.kind == "all":  # every value above the float32 noise floor of the decomposition
        return max(1, int((s > s[0] * ALL_RTOL).sum()))
    if rule.kind == "sv_ratio":
        k = int((s > s[0] / rule.value).sum())
    else:
        w = s * s if rule.kind == "sv_fro" else s
        target = rule.value**2 if rule.kind == "sv_fro" else rule.value
        total = float(w.sum())
        k = n if total <= 0 else int(torch.searchsorted(torch.cumsum(w, 0) / total, torch.tensor(target, dtype=torch.float64))) + 1
    cap = n if rule.max_rank is None else min(n, rule.max_rank)
    return max(1, min(k, cap))


def retained_fro(s: torch.Tensor, k: int) -> float:
    """Fraction of ‖ΔW‖_F kept by the first k singular values (1.0 for a zero ΔW)."""
    total = float((s.double() ** 2).sum())
    return 1.0 if total <= 0 else math.sqrt(float((s[:k].double() ** 2).sum()) / total)


def truncate(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-k factors (up k-columns, down k-rows) with up·down = U_k·S_k·Vh_k.

    √S goes to both factors so up and down have similar magnitudes (kinder to fp16).
    """
    root = s[:k].float().sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


def lora_tensors(
    up2d: torch.Tensor, down2d: torch.Tensor, shape: Sequence[int], dtype: torch.dtype, alpha: float | None = None
) -> dict[str, torch.Tensor]:
    """A plain LoRA module with ΔW = up2d·down2d exactly, stored with the given alpha (default: rank).

    Loaders apply alpha/rank, so both factors are multiplied by √(rank/alpha) to cancel it. A conv
    layer gets down as k × in × kh × kw and up as out × k × 1 × 1, as kohya writes them.
    """
    k = up2d.shape[1]
    alpha = float(k if alpha is None else alpha)
    c = math.sqrt(k / alpha)
    up, down = up2d * c, down2d * c
    if len(shape) == 4:
        up = up.reshape(shape[0], k, 1, 1)
        down = down.reshape(k, *shape[1:])
    return {
        "lora_down.weight": down.to(dtype).contiguous(),
        "lora_up.weight": up.to(dtype).contiguous(),
        "alpha": torch.tensor(alpha, dtype=dtype),
    }


def stack_factors(parts: Sequence[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ wᵢ·upᵢ·downᵢ as one (up, down) pair: [w₁up₁ | w₂up₂ | …] and [down₁; down₂; …]."""
    ups = [up.float() * w for up, _, w in parts]
    downs = [down.float() for _, down, _ in parts]
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)
