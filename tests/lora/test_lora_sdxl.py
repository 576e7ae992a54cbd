"""LoRA tools on SDXL: sd-scripts' key contract (recorded from a real checkout), LoRA Block Weight's SDXL block map
(recorded from its code), block-weight merge with fractional weights for LoRA, LoCon and LoHa, the SDXL presets,
compress and mix, inspect, and LoRAs of the wrong family refused by name."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
import torch

from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.generation.face_lora import apply_lora
from charframe.lora import io as lio
from charframe.lora.blocks import BLOCK_IDS, expand_weights, load_presets, resolve_weights
from charframe.lora.functional import RankRule, module_delta
from charframe.lora.keys import block_of
from charframe.lora.ops.compress import compress_file
from charframe.lora.ops.inspect import format_report, inspect_file
from charframe.lora.ops.merge import merge_files
from charframe.lora.ops.mix import mix_files
from charframe.models.single_file import empty_encoders, family_config
from charframe.models.tiny import build_tiny_sd, build_tiny_sdxl
from charframe.testing.synthetic_lora import kohya_targets, random_network
from charframe.training.adapters import NetworkSpec, create_network, remove_network
from charframe.training.plan import make_plan

DATA = Path(__file__).parents[1] / "data"
# sd-scripts' own SDXL networks: SdxlUNet2DConditionModel (library/sdxl_original_unet.py) and sdxl_model_util's two text
# encoder configs on the meta device, networks/lora.py create_network + apply_to (LyCORIS 4.1.3 with charframe's
# preset for Locon/Loha), dim 8 / alpha 4, sd-scripts 48d368fa, transformers 4.54.1: every key and shape.
GOLDEN = DATA / "sd_scripts_sdxl_keys.json.gz"
# LoRA Block Weight (hako-mikan/sd-webui-lora-block-weight b403cb7): the block its ratiodealer() gives every SDXL
# module, on the names AUTOMATIC1111 gives an SDXL model's layers, and its to26() of the 12/20-weight forms.
LBW = DATA / "lbw_sdxl_blocks.json.gz"


def _json(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.fixture(scope="module")
def sdxl_on_meta():
    """SDXL's real UNet and both text encoders (the shipped configs), shapes only."""
    from diffusers import UNet2DConditionModel

    cfg = family_config("sdxl")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg.unet)
    encoders = empty_encoders(cfg)
    return unet, [encoders["text_encoder"], encoders["text_encoder_2"]]


@pytest.mark.parametrize("logic", ["Lora1x1A50p-AdamW8", "Lora3x3A50p-AdamW8", "LoconA50p-AdamW8", "LohaA50p-AdamW8"])
def test_sdxl_keys_shapes_and_alphas_equal_sd_scripts(logic, sdxl_on_meta) -> None:
    golden = _json(GOLDEN)
    unet, encoders = sdxl_on_meta
    spec = NetworkSpec.from_recipe(make_plan(logic, 8, 100, 1, dataset="d.toml", out="x").network)
    net = create_network(spec, unet, encoders)
    try:
        state = net.state_dict()
        ours = {k: list(v.shape) for k, v in state.items()}
        alphas = sorted({float(v) for k, v in state.items() if k.endswith(".alpha")})
    finally:
        remove_network(net)
    assert len(ours) == len(golden["keys"][logic])
    assert ours == golden["keys"][logic]
    assert alphas == golden["alphas"][logic] == [4.0]


def test_block_of_every_sdxl_module_is_lora_block_weights() -> None:
    lbw = _json(LBW)
    assert lbw["blocks"] and all(block_of(name) == block for name, block in lbw["blocks"].items())
    sdxl = get_family("sdxl")
    assert [f.ids for f in sdxl.block_forms[:2]] == [tuple(lbw["blockid20"]), tuple(lbw["blockid12"])]
    for form, example in lbw["to26"].items():  # the short forms expand as LoRA Block Weight's to26() does
        assert expand_weights(example["weights"], "sdxl") == tuple(float(w) for w in example["to26"]), form


def test_sdxl_presets_carry_sd15_face_and_body_over_by_level() -> None:
    """Each SDXL block takes the SD1.x block at the same level and position (the reasoning in block_presets.toml)."""
    level_map = {f"IN{i:02d}": f"IN{i:02d}" for i in range(9)} | {"M00": "M00", "BASE": "BASE"}
    level_map |= {f"OUT{i:02d}": f"OUT{i + 3:02d}" for i in range(9)}
    sd15, sdxl = load_presets(family="sd15"), load_presets(family="sdxl")
    for name in ("FACE", "BODY"):
        a, b = dict(zip(BLOCK_IDS, sd15[name])), dict(zip(BLOCK_IDS, sdxl[name]))
        assert all(b[x] == a[level_map[x]] for x in level_map), name
        assert all(b[x] == 0 for x in ("IN09", "IN10", "IN11", "OUT09", "OUT10", "OUT11"))


@pytest.fixture(scope="module")
def tiny_xl():
    return build_tiny_sdxl(seed=0)


def _sdxl_file(tiny_xl, tmp_path: Path, kind: str, name: str = "illustrious-krnk.safetensors", **kw) -> Path:
    targets = kohya_targets(tiny_xl.unet, tiny_xl.text_encoders, conv3x3=True)
    return lio.save_lora_file(tmp_path / name, random_network(targets, 4, kind, seed=5, **kw), {})


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_tiny_sdxl_targets_use_sd_scripts_names(kind, tiny_xl, tmp_path) -> None:
    net = lio.read_network(_sdxl_file(tiny_xl, tmp_path, kind))
    assert net.family == "sdxl"
    names = set(net.modules)
    assert {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "lora_unet_input_blocks_3_0_op",
            "lora_unet_output_blocks_2_2_conv", "lora_unet_input_blocks_1_0_in_layers_2",
            "lora_unet_middle_block_1_proj_in", "lora_te1_text_model_encoder_layers_0_mlp_fc1",
            "lora_te2_text_model_encoder_layers_2_self_attn_out_proj"} <= names
    proj_in = net.modules["lora_unet_input_blocks_4_1_proj_in"]
    assert proj_in.kernel == ()  # SDXL's proj_in is a linear layer, even stored flat by LoHa
    assert net.modules["lora_unet_input_blocks_1_0_in_layers_2"].kernel == (3, 3)


@pytest.mark.parametrize("kind, tucker", [("lora", False), ("lora", True), ("loha", False)])
def test_block_weight_merge_scales_each_sdxl_block_fractionally(kind, tucker, tiny_xl, tmp_path) -> None:
    """LoRA (3x3 conv), LoCon (Tucker mid) and LoHa: each module's ΔW becomes its block's weight times ΔW."""
    src = _sdxl_file(tiny_xl, tmp_path, kind, tucker=tucker)
    weights20 = [0.5, 1, 0.25, 0, 1, -0.5, 1, 0.75, 1, 0.3, 2, 1, 0, 0.6, 1, 1, 0.125, 1, 0.9, 0.4]
    (result,) = merge_files([src], ",".join(map(str, weights20)), project_root=tmp_path)
    by_block = dict(zip(get_family("sdxl").block_forms[0].ids, weights20))
    before, after = lio.read_network(src), lio.read_network(result.output)
    assert result.dropped == sum(1 for n in before.modules if by_block[block_of(n)] == 0) > 0
    for name, module in before.modules.items():
        w = by_block[block_of(name)]
        if w == 0:
            assert name not in after.modules
            continue
        want = w * module_delta(module.kind, module.tensors)
        got = module_delta(after.modules[name].kind, after.modules[name].tensors)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_named_presets_follow_each_files_family(tiny_xl, tmp_path) -> None:
    xl = _sdxl_file(tiny_xl, tmp_path, "lora")
    sd = tmp_path / "anything-krnk.safetensors"
    tiny = build_tiny_sd(0)
    lio.save_lora_file(sd, random_network(kohya_targets(tiny.unet, tiny.text_encoder), 4, "lora", seed=1), {})
    a, b = merge_files([xl, sd], "FACE", project_root=tmp_path)
    assert a.weights == resolve_weights("FACE", family="sdxl")[1] and b.weights == resolve_weights("FACE")[1]
    assert a.weights != b.weights


def test_sdxl_weights_on_an_sd15_lora_and_the_reverse_are_refused_by_file(tiny_xl, tmp_path) -> None:
    tiny = build_tiny_sd(0)
    sd = lio.save_lora_file(tmp_path / "anything-krnk.safetensors",
                            random_network(kohya_targets(tiny.unet, tiny.text_encoder), 4, "lora", seed=1), {})
    with pytest.raises(CharframeError) as err:
        list(merge_files([sd], "0,1,0,0,1,0,1,1,0,1,1,1", project_root=tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"{sd}: an SD1.x LoRA: preset: bad weight list") and "12 is SDXL's form" in msg
    assert "\n" not in msg
    xl = _sdxl_file(tiny_xl, tmp_path, "lora")
    with pytest.raises(CharframeError) as err:
        list(merge_files([xl], "OUTALL", project_root=tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"{xl}: an SDXL LoRA: preset: unknown preset 'OUTALL' for SDXL LoRAs")
    assert "'OUTALL' is an SD1.x preset; this is an SDXL LoRA" in msg
    with pytest.raises(CharframeError, match=r"17 weights; a block-weight list for SDXL has 20, 12 or 26 \(17 is SD1.x's form\)"):
        list(merge_files([xl], ",".join(["1"] * 17), project_root=tmp_path))


def test_compress_and_mix_on_sdxl_files(tiny_xl, tmp_path) -> None:
    a = _sdxl_file(tiny_xl, tmp_path, "loha", name="a.safetensors")
    b = _sdxl_file(tiny_xl, tmp_path, "lora", name="b.safetensors")
    out = compress_file(a, RankRule("all", 0, None), dtype="fp32").output
    before, after = lio.read_network(a), lio.read_network(out)
    assert after.family == "sdxl" and set(after.modules) == set(before.modules)
    linear = after.modules["lora_unet_input_blocks_4_1_proj_in"].tensors["lora_down.weight"]
    assert linear.dim() == 2  # a linear layer in SDXL: plain LoRA factors, not a 1x1 conv
    for name, module in before.modules.items():
        want = module_delta(module.kind, module.tensors)
        got = module_delta("lora", after.modules[name].tensors).reshape(want.shape)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    mixed = mix_files([(a, 0.5), (b, 0.25)], output=tmp_path / "ab.safetensors", dtype="fp32").output
    net_a, net_b, net_m = lio.read_network(a), lio.read_network(b), lio.read_network(mixed)
    name = "lora_te2_text_model_encoder_layers_0_mlp_fc2"
    want = 0.5 * module_delta("loha", net_a.modules[name].tensors) + 0.25 * module_delta("lora", net_b.modules[name].tensors)
    torch.testing.assert_close(module_delta("lora", net_m.modules[name].tensors), want, rtol=1e-4, atol=1e-5)


def test_mixing_families_is_refused(tiny_xl, tmp_path) -> None:
    tiny = build_tiny_sd(0)
    sd = lio.save_lora_file(tmp_path / "sd.safetensors",
                            random_network(kohya_targets(tiny.unet, tiny.text_encoder), 4, "lora", seed=1), {})
    xl = _sdxl_file(tiny_xl, tmp_path, "lora", name="xl.safetensors")
    with pytest.raises(CharframeError) as err:
        mix_files([(sd, 1.0), (xl, 1.0)], output=tmp_path / "m.safetensors")
    assert str(err.value) == (f"{xl}: is an SDXL LoRA and {sd} an SD1.x LoRA; LoRAs of different model families "
                              "cannot be mixed")
    assert not (tmp_path / "m.safetensors").exists()


def test_inspect_shows_the_family(tiny_xl, tmp_path) -> None:
    path = _sdxl_file(tiny_xl, tmp_path, "lora")
    rep = inspect_file(path)
    assert rep.family == "sdxl" and set(rep.blocks) <= {"BASE", *get_family("sdxl").block_forms[0].ids}
    text = format_report(rep)
    assert "  family    SDXL   (lora_te1, lora_te2, lora_unet; 96-wide text context)" in text


def test_family_from_metadata_width_and_prefixes(tiny_xl, tmp_path) -> None:
    """The real widths decide (2048 SDXL, 768 SD1.x); a tiny UNet-only file falls back to its names or metadata."""
    unet_only = kohya_targets(tiny_xl.unet, None)
    plain = lio.save_lora_file(tmp_path / "unet-only.safetensors", random_network(unet_only, 2, "lora"), {})
    assert lio.read_network(plain).family == "sdxl"  # original-layout UNet names without SD1.x's level-0 attention
    tiny = build_tiny_sd(0)
    sd_unet = lio.save_lora_file(tmp_path / "sd-unet.safetensors", random_network(kohya_targets(tiny.unet, None), 2, "lora"),
                                 {"ss_base_model_version": "sd_v1"})
    assert lio.read_network(sd_unet).family == "sd15"
    wide = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (640, 2048)}
    xl_diffusers = lio.save_lora_file(tmp_path / "wide.safetensors", random_network(wide, 2, "lora"), {})
    assert lio.read_network(xl_diffusers).family == "sdxl"  # diffusers-named SDXL LoRA: the 2048-wide context says it


def test_lora_of_the_other_family_is_refused_on_a_model(tiny_xl, tmp_path) -> None:
    tiny = build_tiny_sd(0)
    sd = lio.save_lora_file(tmp_path / "face-sd15.safetensors",
                            random_network(kohya_targets(tiny.unet, tiny.text_encoder), 4, "lora", seed=1), {})
    xl = _sdxl_file(tiny_xl, tmp_path, "lora", name="face-sdxl.safetensors")
    with pytest.raises(CharframeError, match=r"face-sd15.safetensors: is an SD1.x LoRA, the model is SDXL; use a LoRA "
                                             r"trained on an SDXL model$"):
        apply_lora(copy.deepcopy(tiny_xl.unet), tiny_xl.text_encoders, sd, 1.0)
    with pytest.raises(CharframeError, match=r"face-sdxl.safetensors: is an SDXL LoRA, the model is SD1.x"):
        apply_lora(copy.deepcopy(tiny.unet), tiny.text_encoder, xl, 1.0)


def test_sdxl_lora_loads_in_diffusers_sdxl_pipeline_exactly(tiny_xl, tmp_path) -> None:
    """diffusers' `load_lora_weights` on charframe's SDXL key names changes the UNet and both text encoders exactly
    as merging each module's ΔW into the layers by name (`apply_lora`) does."""
    import peft  # noqa: F401  (diffusers' load_lora_weights needs it)

    path = _sdxl_file(tiny_xl, tmp_path, "lora")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (1, 77), generator=g)
    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500])
    cond = {"text_embeds": torch.randn(1, 64, generator=g), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}

    def outputs(comps):
        with torch.no_grad():
            states = torch.cat([comps.text_encoder(ids, output_hidden_states=True).hidden_states[-2],
                                comps.text_encoder_2(ids, output_hidden_states=True).hidden_states[-2]], dim=-1)
            return states, comps.unet(x, t, states, added_cond_kwargs=cond).sample

    ours = copy.deepcopy(tiny_xl)
    assert apply_lora(ours.unet, ours.text_encoders, path, 1.0) == len(lio.read_network(path).modules)
    pipe = copy.deepcopy(tiny_xl).pipeline()
    pipe.load_lora_weights(str(path))
    base_states, base_out = outputs(tiny_xl)
    ref_states, ref_out = outputs(ours)
    got_states, got_out = outputs(pipe)
    assert float((ref_out - base_out).abs().max()) > 1e-2 and float((ref_states - base_states).abs().max()) > 1e-2
    torch.testing.assert_close(got_states, ref_states, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_out, ref_out, rtol=1e-4, atol=1e-5)
