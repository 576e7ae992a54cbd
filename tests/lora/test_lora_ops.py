"""merge / compress / mix on files of every network type: exact ΔW checks, metadata, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from charframe.cli import main as cli_main
from charframe.lora import io as lio
from charframe.lora.blocks import BLOCK_IDS, block_of, expand_weights, load_presets, parse_weights
from charframe.lora.ops.compress import compress_file
from charframe.lora.functional import RankRule, full_svd, module_delta, select_rank
from charframe.lora.ops.merge import merge_file
from charframe.lora.ops.mix import mix_files, parse_mix_arg
from charframe.testing.synthetic_lora import random_network

#: Real SD1.x module names (one or two per block kind), small shapes.
TARGETS = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (12, 12),  # BASE
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (12, 12),  # IN01
    "lora_unet_down_blocks_0_downsamplers_0_conv": (8, 8, 3, 3),  # IN03
    "lora_unet_down_blocks_1_attentions_0_proj_in": (12, 8, 1, 1),  # IN04
    "lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_ff_net_2": (12, 16),  # IN05
    "lora_unet_mid_block_resnets_0_conv1": (8, 12, 3, 3),  # M00
    "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (12, 8),  # OUT03
    "lora_unet_up_blocks_1_attentions_2_proj_out": (8, 8, 1, 1),  # OUT05
    "lora_unet_up_blocks_3_resnets_2_conv2": (8, 8, 3, 3),  # OUT11
    "lora_unet_time_embedding_linear_1": (12, 8),  # outside every block
}
KINDS = [("lora", False), ("lora", True), ("loha", False), ("loha", True), ("lokr", False), ("lokr", True)]
KIND_IDS = ["LoRA", "LoCon-tucker", "LoHa", "LoHa-tucker", "LoKr", "LoKr-factored"]
META = {"ss_network_dim": "6", "ss_network_alpha": "3", "ss_output_name": "krnk", "ss_network_args": '{"conv_dim": "6"}', "note": "keep"}


def write(tmp_path, kind="lora", tucker=False, name="krnk", seed=0, dtype=torch.float32, rank=6):
    tensors = random_network(TARGETS, rank, kind, dtype=dtype, seed=seed, tucker=tucker)
    return lio.save_lora_file(tmp_path / f"{name}.safetensors", tensors, META)


def deltas(path):
    net = lio.read_network(path)
    return {n: module_delta(m.kind, m.tensors).reshape(TARGETS[n][0], -1) for n, m in net.modules.items()}


def assert_rel_close(a, b, rel):
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rel * float(b.abs().max()) + 1e-12


@pytest.mark.parametrize("kind, tucker", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("preset", ["FACE", "BODY", "frac"])
def test_merge_scales_delta_exactly(tmp_path, kind, tucker, preset, caplog):
    src = write(tmp_path, kind, tucker)
    presets = load_presets()
    weights = presets.get(preset) or expand_weights([0.5, -0.75, 1.5, 0.25] + [2.0] * 13)
    label = preset if preset != "frac" else "frac"
    res = merge_file(src, weights, label)
    assert res.output == tmp_path / f"krnk-{label}.safetensors"
    before, after = deltas(src), deltas(res.output)
    by_block = dict(zip(BLOCK_IDS, weights))
    for name, d in before.items():
        w = 1.0 if block_of(name) is None else by_block[block_of(name)]
        if w == 0:
            assert name not in after
        else:
            assert_rel_close(after[name], w * d, 1e-6)
    assert res.dropped == sum(1 for n in before if n not in after) and res.kept == len(after)
    assert "lora_unet_time_embedding_linear_1" in caplog.text and caplog.text.count("belong to no SD1.x block") == 1


def test_merge_metadata_and_history(tmp_path):
    src = write(tmp_path)
    out = merge_file(src, load_presets()["FACE"], "FACE").output
    _, md = lio.load_lora_file(out)
    assert md["note"] == "keep" and md["ss_network_dim"] == "6" and md["ss_output_name"] == "krnk-FACE"
    hist = json.loads(md["charframe_history"])
    assert hist[-1]["op"] == "merge" and hist[-1]["preset"] == "FACE" and hist[-1]["weights"]["IN01"] == 1.0
    assert hist[-1]["source"] == "krnk.safetensors" and hist[-1]["source_hash"] == lio.lora_file_hashes(src)[0]
    assert (md["sshs_model_hash"], md["sshs_legacy_hash"]) == lio.lora_file_hashes(out)


@pytest.mark.parametrize("kind, tucker", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("rule", [RankRule("sv_ratio", 4), RankRule("sv_fro", 0.95), RankRule("rank", 2), RankRule("sv_cumulative", 0.8, max_rank=3)])
def test_compress_equals_best_rank_k_of_full_svd(tmp_path, kind, tucker, rule):
    src = write(tmp_path, kind, tucker)
    res = compress_file(src, rule)  # fp16 output
    assert res.output == tmp_path / f"krnk-{rule.suffix()}.safetensors"
    net = lio.read_network(res.output)
    assert net.kinds() == {"lora"}
    before = deltas(src)
    reports = {r.name: r for r in res.modules}
    file_alpha = max(r.rank_out for r in res.modules)
    for name, d in before.items():
        u, s, vh = full_svd(d)  # the naive reference: SVD of the full ΔW
        k = select_rank(s, rule)
        m = net.modules[name]
        assert m.rank == k == reports[name].rank_out
        assert m.alpha == file_alpha  # one alpha per file (= largest rank: effective scale 1 there)
        assert m.tensors["lora_up.weight"].dtype == torch.float16
        got = module_delta("lora", m.tensors)
        assert got.shape == TARGETS[name]  # layer shape restored, also for flat LoHa convs
        best = (u[:, :k] * s[:k]) @ vh[:k]
        assert_rel_close(got.reshape(best.shape), best, 3e-3)  # fp16 storage
        assert reports[name].fro == pytest.approx(float(s[:k].norm() / s.norm()), rel=1e-4)


def test_compress_keeps_module_layout_for_loaders(tmp_path):
    out = compress_file(write(tmp_path, "loha"), RankRule("rank", 3)).output
    net = lio.read_network(out)
    conv = net.modules["lora_unet_mid_block_resnets_0_conv1"].tensors
    assert conv["lora_down.weight"].shape == (3, 12, 3, 3) and conv["lora_up.weight"].shape == (8, 3, 1, 1)
    proj = net.modules["lora_unet_down_blocks_1_attentions_0_proj_in"].tensors
    assert proj["lora_down.weight"].shape == (3, 8, 1, 1)
    _, md = lio.load_lora_file(out)
    assert md["ss_network_dim"] == md["ss_network_alpha"] == "3"  # fixed rank: alpha = rank, scale 1
    assert {m.alpha for m in net.modules.values()} == {3.0}
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "3", "conv_alpha": "3", "algo": "locon"}
    assert json.loads(md["charframe_history"])[-1]["op"] == "compress"
    assert (md["sshs_model_hash"], md["sshs_legacy_hash"]) == lio.lora_file_hashes(out)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_compress_dtype(tmp_path, dtype):
    out = compress_file(write(tmp_path), RankRule(), dtype=dtype).output
    t, md = lio.load_lora_file(out)
    assert {v.dtype for v in t.values()} == {torch.bfloat16 if dtype == "bf16" else torch.float32}
    assert md["ss_network_dim"] == "Dynamic"
    alphas = {float(v) for k, v in t.items() if k.endswith(".alpha")}
    assert len(alphas) == 1 and md["ss_network_alpha"] == f"{alphas.pop():g}"


def test_mix_equals_weighted_sum(tmp_path):
    a = write(tmp_path, "lora", False, name="a", seed=1)
    b = write(tmp_path, "lora", True, name="b", seed=2)
    c = write(tmp_path, "loha", False, name="c", seed=3)
    for inputs in ([(a, 0.7), (b, -0.5)], [(a, 0.7), (c, 0.5)]):
        res = mix_files(inputs, output=tmp_path / "m.safetensors", dtype="fp32", overwrite=True)
        got = deltas(res.output)
        want = {n: sum(w * deltas(p)[n] for p, w in inputs) for n in TARGETS}
        assert set(got) == set(TARGETS)
        for n in TARGETS:
            assert_rel_close(got[n], want[n], 2e-5)
    _, md = lio.load_lora_file(tmp_path / "m.safetensors")
    assert [i["weight"] for i in json.loads(md["charframe_history"])[-1]["inputs"]] == [0.7, 0.5]


def test_mix_with_partial_modules_and_rank_limit(tmp_path):
    a = write(tmp_path, name="a", seed=1)
    b_tensors = {k: v for k, v in random_network(TARGETS, 4, seed=5).items() if "te_" not in k}
    b = lio.save_lora_file(tmp_path / "b.safetensors", b_tensors, {})
    res = mix_files([(a, 1.0), (b, 1.0)], rule=RankRule("rank", 3), dtype="fp32")
    assert res.output == tmp_path / "a+b-mix.safetensors"
    got, da, db = deltas(res.output), deltas(a), deltas(b)
    for n in TARGETS:
        total = da[n] + db.get(n, 0)
        u, s, vh = full_svd(total)
        k = min(3, len(s))
        assert_rel_close(got[n], (u[:, :k] * s[:k]) @ vh[:k], 2e-5)


def test_parse_mix_arg():
    assert parse_mix_arg("A.safetensors:0.7") == (__import__("pathlib").Path("A.safetensors"), 0.7)
    assert parse_mix_arg("B.safetensors")[1] == 1.0
    p, w = parse_mix_arg(r"C:\loras\a.safetensors:-0.5")
    assert str(p) == r"C:\loras\a.safetensors" and w == -0.5
    p, w = parse_mix_arg(r"C:\loras\a.safetensors")
    assert str(p) == r"C:\loras\a.safetensors" and w == 1.0


def test_cli_merge_compress_mix_inspect(tmp_path, capsys):
    src = write(tmp_path, "loha", dtype=torch.float16)
    assert cli_main(["-q", "merge", str(src), "--preset", "FACE"]) == 0
    face = tmp_path / "krnk-FACE.safetensors"
    assert face.is_file() and "krnk-FACE.safetensors:" in capsys.readouterr().out
    assert cli_main(["-q", "compress", str(face), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "krnk-FACE-SvR16.safetensors").is_file()
    assert "Frobenius kept" in out and "mean rank" in out and "MiB →" in out
    assert cli_main(["-q", "compress", str(face), "--sv-fro", "0.9", "--max-rank", "4"]) == 0
    assert (tmp_path / "krnk-FACE-SvFro0.9.safetensors").is_file()
    assert cli_main(["-q", "mix", f"{face}:0.7", f"{src}:0.5", "--rank", "4", "-o", str(tmp_path / "mix.safetensors")]) == 0
    assert lio.read_network(tmp_path / "mix.safetensors").modules
    capsys.readouterr()
    assert cli_main(["inspect", str(tmp_path / "krnk-FACE-SvR16.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "LoRA (with 3x3 conv" in out and "IN01:1" in out and "charframe_history" in out and "ss_network_dim = Dynamic" in out
    custom = ",".join(["1"] * 25 + ["0.5"])
    assert cli_main(["-q", "merge", str(src), "--preset", custom]) == 0
    assert len(list(tmp_path.glob("krnk-LBW*.safetensors"))) == 1


def test_cli_project_presets(tmp_path, capsys):
    (tmp_path / "charframe.toml").write_text('[block_presets]\nHALF = [0.5]\n', encoding="utf-8")
    src = write(tmp_path)
    assert cli_main(["-q", "merge", str(src), "--preset", "ALL"]) == 2
    assert "preset HALF: 1 weights" in capsys.readouterr().err
    (tmp_path / "charframe.toml").write_text('[block_presets]\nHALF = "' + ",".join(["0.5"] * 26) + '"\n', encoding="utf-8")
    assert cli_main(["-q", "merge", str(src), "--preset", "half"]) == 0
    assert_rel_close(deltas(tmp_path / "krnk-HALF.safetensors")[next(iter(TARGETS))], 0.5 * deltas(src)[next(iter(TARGETS))], 1e-6)


def test_bin_launcher_command_lines(tmp_path):
    """The launcher rows `charframe compress`, `charframe merge --preset FACE|BODY` + dropped files."""
    a, b = write(tmp_path, name="a"), write(tmp_path, "lokr", name="b")
    for row in (["merge", "--preset", "FACE"], ["merge", "--preset", "BODY"], ["compress"]):
        assert cli_main(["-q", *row, str(a), str(b)]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert names == ["a-BODY.safetensors", "a-FACE.safetensors", "a-SvR16.safetensors", "a.safetensors",
                     "b-BODY.safetensors", "b-FACE.safetensors", "b-SvR16.safetensors", "b.safetensors"]  # fmt: skip
