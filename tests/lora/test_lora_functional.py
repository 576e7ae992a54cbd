"""Pure math of charframe.lora.functional: ΔW per kind (checked against LyCORIS), exact scaling,
QR-core SVD vs full SVD, rank rules."""

from __future__ import annotations

import pytest
import torch
from lycoris.functional import locon, loha, lokr

from charframe.lora import functional as F
from charframe.testing.synthetic_lora import random_module

SHAPES = [(12, 8), (12, 8, 1, 1), (12, 8, 3, 3)]
KINDS = ["lora", "loha", "lokr"]


def assert_rel_close(a, b, rel=1e-5):
    """Max |a-b| within `rel` of max |b|: float32 rounding of the same ΔW."""
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rel * float(b.abs().max()) + 1e-12


def _module(kind, shape, tucker, seed=0, alpha=3.0):
    return random_module(shape, 4, kind, torch.Generator().manual_seed(seed), alpha=alpha, tucker=tucker)


def _lycoris_delta(kind, t):
    g = t.get
    if kind == "lora":
        return locon.diff_weight(g("lora_down.weight"), g("lora_up.weight"), g("lora_mid.weight"), gamma=3.0 / 4, backend="torch")
    if kind == "loha":
        return loha.diff_weight(g("hada_w1_b"), g("hada_w1_a"), g("hada_w2_b"), g("hada_w2_a"), g("hada_t1"), g("hada_t2"), gamma=3.0 / 4, backend="torch")
    return lokr.diff_weight(g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b"), g("lokr_w2"), g("lokr_w2_a"), g("lokr_w2_b"), g("lokr_t2"), gamma=3.0, backend="torch")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tucker", [False, True])
def test_delta_matches_lycoris(kind, shape, tucker):
    t = _module(kind, shape, tucker)
    mine = F.module_delta(kind, t)
    ref = _lycoris_delta(kind, t)
    assert mine.numel() == 12 * 8 * (9 if len(shape) == 4 and shape[2] == 3 else 1)
    torch.testing.assert_close(mine, ref.reshape(mine.shape), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tucker", [False, True])
@pytest.mark.parametrize("factor", [0.5, -1.25, 3.0, 0.0])
def test_scale_module_scales_delta_exactly(kind, tucker, factor):
    t = _module(kind, (12, 8, 3, 3), tucker)
    scaled = F.scale_module(kind, t, factor)
    assert_rel_close(F.module_delta(kind, scaled), factor * F.module_delta(kind, t), 1e-6)
    assert torch.equal(scaled["alpha"], t["alpha"])  # alpha untouched; only one factor changed
    assert sum(not torch.equal(scaled[k], t[k]) for k in t) <= 1


def test_lora_delta_without_alpha_has_scale_one():
    t = _module("lora", (12, 8), False)
    del t["alpha"]
    torch.testing.assert_close(F.module_delta("lora", t), t["lora_up.weight"] @ t["lora_down.weight"])


@pytest.mark.parametrize("shape", SHAPES)
def test_lowrank_svd_equals_full_svd(shape):
    t = _module("lora", shape, tucker=len(shape) == 4)
    up, down, layer = F.lora_factors(t["lora_down.weight"], t["lora_up.weight"], t["alpha"], t.get("lora_mid.weight"))
    assert layer == shape
    delta = F.module_delta("lora", t)
    u, s, vh = F.lowrank_svd(up, down)
    _, s_full, _ = F.full_svd(delta)
    assert s.shape == (4,)
    torch.testing.assert_close(s, s_full[:4], rtol=1e-5, atol=1e-6)
    assert float(s_full[4:].abs().max()) < 1e-5 * float(s_full[0])
    torch.testing.assert_close((u * s) @ vh, delta.reshape(12, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u.T @ u, torch.eye(4), atol=1e-5, rtol=0)


def test_select_rank_rules():
    s = torch.tensor([10.0, 5.0, 1.0, 0.5, 0.1])
    R = F.RankRule
    assert F.select_rank(s, R("sv_ratio", 16)) == 3  # 10/16 = 0.625 → 10, 5, 1
    assert F.select_rank(s, R("sv_ratio", 16, max_rank=2)) == 2
    assert F.select_rank(s, R("sv_ratio", 1)) == 1  # nothing is > s_max: at least 1
    assert F.select_rank(s, R("sv_ratio", 1000)) == 5
    fro = torch.sqrt(torch.cumsum(s**2, 0) / (s**2).sum())  # 0.890, 0.9950, …
    assert F.select_rank(s, R("sv_fro", 0.88)) == 1 and fro[0] >= 0.88
    assert F.select_rank(s, R("sv_fro", 0.9)) == 2
    assert F.select_rank(s, R("sv_cumulative", 0.9)) == 2  # (10+5)/16.6 = 0.904
    assert F.select_rank(s, R("sv_cumulative", 0.95)) == 3
    assert F.select_rank(s, R("sv_cumulative", 1.0)) == 5
    assert F.select_rank(s, R("rank", 2)) == 2 and F.select_rank(s, R("rank", 50)) == 5
    assert F.select_rank(torch.zeros(4), R("sv_ratio", 16)) == 1  # zero update → rank 1
    assert F.select_rank(torch.tensor([1.0, 1e-3, 1e-9]), R("all", 0, None)) == 2


def test_sv_ratio_keeps_one_less_than_resize_lora():
    """sd-scripts' resize_lora: new_rank = clamp(count(s > s_max/ratio), 1, n-1) + 1 (documented fact)."""
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        s = torch.sort(torch.rand(64, generator=g) ** 4, descending=True).values
        count = int((s > s[0] / 16).sum())
        resize_rank = max(1, min(count, len(s) - 1)) + 1
        assert F.select_rank(s, F.RankRule("sv_ratio", 16, None)) == count == resize_rank - 1


def test_rank_rule_validation_and_suffixes():
    assert F.RankRule().suffix() == "SvR16"
    assert F.RankRule("sv_ratio", 8.5).suffix() == "SvR8.5"
    assert F.RankRule("sv_fro", 0.9).suffix() == "SvFro0.9"
    assert F.RankRule("sv_cumulative", 0.95).suffix() == "SvCum0.95"
    assert F.RankRule("rank", 32).suffix() == "Rank32"
    for bad in [("sv_ratio", 0.5), ("sv_fro", 1.5), ("sv_cumulative", 0), ("rank", 2.5), ("nope", 1)]:
        with pytest.raises(ValueError):
            F.RankRule(*bad)


@pytest.mark.parametrize("alpha", [None, 1.0, 8.0])
def test_truncate_and_lora_tensors_layout_and_alpha(alpha):
    u, s, vh = torch.linalg.svd(torch.randn(6, 4 * 9), full_matrices=False)
    up, down = F.truncate(u, s, vh, 3)
    t = F.lora_tensors(up, down, (6, 4, 3, 3), torch.float16, alpha)
    assert t["lora_down.weight"].shape == (3, 4, 3, 3) and t["lora_up.weight"].shape == (6, 3, 1, 1)
    assert float(t["alpha"]) == (3.0 if alpha is None else alpha) and t["lora_up.weight"].dtype == torch.float16
    best = (u[:, :3] * s[:3]) @ vh[:3]
    torch.testing.assert_close(F.module_delta("lora", t).reshape(6, -1), best, rtol=2e-3, atol=2e-3)


def test_stack_factors_is_weighted_sum():
    a = (torch.randn(6, 2), torch.randn(2, 5), 0.7)
    b = (torch.randn(6, 3), torch.randn(3, 5), -0.5)
    up, down = F.stack_factors([a, b])
    torch.testing.assert_close(up @ down, 0.7 * a[0] @ a[1] - 0.5 * b[0] @ b[1])


@pytest.mark.parametrize("case", ["plain", "rank_deficient", "zero", "wide_rank"])
def test_lowrank_truncate_equals_best_rank_k(case):
    g = torch.Generator().manual_seed(4)
    up, down = torch.randn(20, 6, generator=g) * torch.logspace(0, -3, 6), torch.randn(6, 45, generator=g)
    if case == "rank_deficient":
        up[:, 3] = up[:, 0]
    if case == "zero":
        up.zero_()
    if case == "wide_rank":  # rank above the output size, as stacked factors in mix can be
        up, down = torch.randn(4, 9, generator=g), torch.randn(9, 30, generator=g)
    u, s, vh = F.full_svd(up @ down)
    for rule in (F.RankRule("sv_ratio", 50), F.RankRule("rank", 2), F.RankRule("all", 0, None)):
        up_k, down_k, s_core = F.lowrank_truncate(up, down, lambda s: F.select_rank(s, rule))
        k = up_k.shape[1]
        assert k == F.select_rank(s, rule) or case == "zero"
        best = (u[:, :k] * s[:k]) @ vh[:k]
        assert float((up_k @ down_k - best).abs().max()) <= 1e-5 * max(float(s[0]), 1e-30) + (0 if case != "zero" else 1e-12)
        torch.testing.assert_close(s_core[: min(len(s_core), 3)], s[: min(len(s_core), 3)], rtol=1e-4, atol=1e-6)
