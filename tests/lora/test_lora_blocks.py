"""Block weights: 17→26 expansion, presets as data (shipped, project, file), their checks and errors."""

from __future__ import annotations

import pytest

from charframe.errors import CharframeError
from charframe.lora import blocks as B

FACE = "0,1,1,1,1,1,0,0,0,1,0,0,0,0,1,0,1,1,1,0,1,1,1,0,0,1"
BODY = "0,1,1,1,0,1,0,0,0,1,0,0,0,0,0,0,1,1,1,1,1,1,1,0,0,1"


def test_block_ids_and_17_form():
    assert len(B.BLOCK_IDS) == 26 and B.BLOCK_IDS[0] == "BASE" and B.BLOCK_IDS[13] == "M00"
    assert B.BLOCK_IDS[1] == "IN00" and B.BLOCK_IDS[-1] == "OUT11"
    w17 = [float(i + 2) for i in range(17)]
    w26 = dict(zip(B.BLOCK_IDS, B.expand_weights(w17)))
    assert [w26[b] for b in B.BLOCK_IDS_17] == w17
    missing = set(B.BLOCK_IDS) - set(B.BLOCK_IDS_17)
    assert missing == {"IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT01", "OUT02"}
    assert all(w26[b] == 1.0 for b in missing)  # LoRA Block Weight fills them with 1


def test_shipped_presets():
    presets = B.load_presets()
    assert presets["FACE"] == tuple(B.parse_weights(FACE))
    assert presets["BODY"] == tuple(B.parse_weights(BODY))
    for name in ("ALL", "NONE", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL", "ALL0.5"):
        assert len(presets[name]) == 26
    assert set(presets["NONE"]) == {0.0} and set(presets["ALL"]) == {1.0} and set(presets["ALL0.5"]) == {0.5}
    outs = dict(zip(B.BLOCK_IDS, presets["OUTS"]))
    assert outs["BASE"] == 1 and outs["IN01"] == 0 and outs["OUT11"] == 1 and outs["OUT03"] == 0


def test_user_presets_from_project_and_file(tmp_path):
    project = {"block_presets": {"myface": FACE.replace(",1", ",0.5", 1), "FACE": [1] * 17}}
    extra = tmp_path / "p.toml"
    extra.write_text('[block_presets]\nBODY2 = "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0.25"\nMYFACE = [0.5]\n', encoding="utf-8")
    with pytest.raises(CharframeError, match=r"p\.toml: preset MYFACE: 1 weights"):
        B.load_presets([extra], project)
    extra.write_text('[block_presets]\nBODY2 = "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0.25"\n', encoding="utf-8")
    presets = B.load_presets([extra], project)
    assert presets["MYFACE"][1] == 0.5 and presets["FACE"] == (1.0,) * 26  # project overrides shipped
    assert B.resolve_preset("body2", presets) == ("BODY2", B.expand_weights([1] * 16 + [0.25]))
    with pytest.raises(CharframeError, match="presets file not found"):
        B.load_presets([tmp_path / "missing.toml"])


def test_resolve_preset_names_lists_and_errors():
    presets = B.load_presets()
    assert B.resolve_preset("face", presets) == ("FACE", presets["FACE"])
    label, weights = B.resolve_preset(FACE.replace("0,0,1", "0,0,0.5"), presets)
    assert label.startswith("LBW") and len(label) == 11 and weights[-1] == 0.5
    assert B.resolve_preset(" 1, 0.5," + ",".join(["1"] * 15), presets)[1][1] == 1.0  # 17-form, IN00 = 1
    with pytest.raises(CharframeError) as e:
        B.resolve_preset("FOO", presets)
    assert "FACE" in str(e.value) and "OUTALL" in str(e.value) and "26 or 17" in str(e.value)
    with pytest.raises(CharframeError) as e:
        B.resolve_preset("1,0,1", presets)
    assert "3 weights" in str(e.value) and "26" in str(e.value) and "17" in str(e.value) and "FACE" in str(e.value)
    with pytest.raises(CharframeError, match="bad weight list"):
        B.resolve_preset("1,x" + ",1" * 24, presets)


def test_module_weights_reports_outside():
    names = ["lora_unet_conv_in", "lora_te_text_model_encoder_layers_0_mlp_fc1", "lora_unet_mid_block_resnets_0_conv1"]
    w = list(range(26))
    per, outside = B.module_weights(names, w)
    assert per == {names[0]: 1.0, names[1]: 0, names[2]: 13} and outside == [names[0]]


def test_resolve_weights_is_the_one_preset_lookup(tmp_path):
    """CLI merge and the demo both call this: shipped presets, the project's, then files."""
    (tmp_path / "charframe.toml").write_text('[block_presets]\nHALF = "' + ",".join(["0.5"] * 26) + '"\n', encoding="utf-8")
    assert B.resolve_weights("half", tmp_path) == ("HALF", (0.5,) * 26)
    assert B.resolve_weights("FACE") == ("FACE", B.load_presets()["FACE"])
    extra = tmp_path / "p.toml"
    extra.write_text('[block_presets]\nHALF = [0.25]\n', encoding="utf-8")
    with pytest.raises(CharframeError, match=r"p\.toml: preset HALF: 1 weights"):
        B.resolve_weights("half", tmp_path, [extra])
    with pytest.raises(CharframeError) as e:
        B.resolve_weights("nope", tmp_path)
    assert e.value.param == "preset" and str(e.value).startswith("preset: unknown preset 'nope'")
    with pytest.raises(CharframeError, match="is a folder"):
        B.resolve_weights("FACE", tmp_path, [tmp_path])


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 1e300, -101])
def test_expand_weights_refuses_non_finite_and_huge(weight):
    with pytest.raises(ValueError, match=r"the weight of IN01 is .*finite number from -100 to 100"):
        B.expand_weights([1, 1, weight] + [1] * 23)
