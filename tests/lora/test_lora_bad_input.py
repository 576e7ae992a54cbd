"""Every Bad-input bullet of issue 3: errors name the file and the key/module; outputs never clobbered."""

from __future__ import annotations

import pytest
import torch

from charframe.cli import main as cli_main
from charframe.errors import CharframeError
from charframe.lora import io as lio
from charframe.lora.ops.compress import compress_file
from charframe.lora.functional import RankRule
from charframe.lora.ops.inspect import inspect_file
from charframe.lora.ops.merge import merge_file
from charframe.testing.synthetic_lora import random_network

T = {
    "lora_unet_down_blocks_0_attentions_0_proj_in": (8, 8, 1, 1),
    "lora_unet_up_blocks_3_resnets_2_conv2": (8, 8, 3, 3),
}


def save(tmp_path, tensors, name="x"):
    return lio.save_lora_file(tmp_path / f"{name}.safetensors", tensors, {})


def good(kind="lora"):
    return random_network(T, 4, kind)


def test_not_a_lora_names_file_and_first_unknown_key(tmp_path):
    path = save(tmp_path, {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, "ckpt")
    with pytest.raises(CharframeError) as e:
        lio.read_network(path)
    assert "ckpt.safetensors" in str(e.value) and "'model.diffusion_model.input_blocks.0.0.weight'" in str(e.value)
    tensors = good() | {"lora_unet_x.lora_side.weight": torch.zeros(1)}
    with pytest.raises(CharframeError, match=r"x\.safetensors.*first unknown key 'lora_unet_x\.lora_side\.weight'"):
        lio.read_network(save(tmp_path, tensors))


@pytest.mark.parametrize(
    "suffix, what",
    [("dora_scale", "DoRA"), ("lora_A.weight", "PEFT"), ("oft_blocks", "OFT"), ("diff", "full-matrix"), ("hada_w1_a.bias_indices", None)],
)
def test_unsupported_layouts_say_not_supported(tmp_path, suffix, what):
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = good() | {f"{name}.{suffix}": torch.ones(8)}
    with pytest.raises(CharframeError) as e:
        lio.read_network(save(tmp_path, tensors, "dora"))
    assert "dora.safetensors" in str(e.value)
    if what:
        assert what in str(e.value) and "not supported" in str(e.value)


@pytest.mark.parametrize("kind, key, shape", [
    ("lora", "lora_up.weight", (8, 3, 1, 1)),
    ("loha", "hada_w2_b", (3, 8)),
    ("lokr", "lokr_w2_b", (2, 4, 1, 1)),
])  # fmt: skip
def test_shape_mismatch_names_module(tmp_path, kind, key, shape):
    tensors = good(kind)
    tensors[f"lora_unet_down_blocks_0_attentions_0_proj_in.{key}"] = torch.randn(shape)
    with pytest.raises(CharframeError, match=r"x\.safetensors: module lora_unet_down_blocks_0_attentions_0_proj_in: shape mismatch"):
        lio.read_network(save(tmp_path, tensors))


def test_missing_factor_names_module(tmp_path):
    tensors = good()
    del tensors["lora_unet_up_blocks_3_resnets_2_conv2.lora_up.weight"]
    with pytest.raises(CharframeError, match=r"module lora_unet_up_blocks_3_resnets_2_conv2: missing lora_up\.weight"):
        lio.read_network(save(tmp_path, tensors))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_names_module(tmp_path, bad):
    tensors = good("loha")
    tensors["lora_unet_up_blocks_3_resnets_2_conv2.hada_w1_a"][0, 0] = bad
    with pytest.raises(CharframeError, match=r"x\.safetensors: module lora_unet_up_blocks_3_resnets_2_conv2: hada_w1_a contains NaN or Inf"):
        inspect_file(save(tmp_path, tensors))


def test_empty_file_is_not_a_lora(tmp_path):
    with pytest.raises(CharframeError, match="holds no tensors"):
        lio.read_network(save(tmp_path, {}))


def test_unknown_preset_and_wrong_count_from_cli(tmp_path, capsys):
    path = save(tmp_path, good())
    assert cli_main(["merge", str(path), "--preset", "FAC"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'FAC'" in err and "FACE, BODY" in err and "26 or 17" in err
    assert cli_main(["merge", str(path), "--preset", "1,1,1"]) == 2
    err = capsys.readouterr().err
    assert "3 weights" in err and "26" in err and "17" in err and "OUTALL" in err


def test_output_exists_is_refused_then_overwritten(tmp_path, capsys):
    path = save(tmp_path, good())
    out = tmp_path / "x-SvR16.safetensors"
    out.write_bytes(b"user file")
    with pytest.raises(CharframeError, match=r"x-SvR16\.safetensors.*pass overwrite"):
        compress_file(path, RankRule())
    assert out.read_bytes() == b"user file"
    assert cli_main(["-q", "compress", str(path)]) == 2 and "output exists" in capsys.readouterr().err
    assert out.read_bytes() == b"user file"
    assert cli_main(["-q", "compress", str(path), "--overwrite"]) == 0
    assert lio.read_network(out).modules


def test_all_outputs_checked_before_any_work(tmp_path, capsys):
    a, b = save(tmp_path, good(), "a"), save(tmp_path, good(), "b")
    (tmp_path / "b-FACE.safetensors").write_bytes(b"keep")
    assert cli_main(["-q", "merge", str(a), str(b), "--preset", "FACE"]) == 2
    assert not (tmp_path / "a-FACE.safetensors").exists()


def test_failed_merge_writes_nothing(tmp_path, monkeypatch):
    path = save(tmp_path, good())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(lio, "_stamp_hashes", boom)
    with pytest.raises(OSError):
        merge_file(path, (1.0,) * 26, "ALL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_preset_removing_everything_is_an_error(tmp_path):
    with pytest.raises(CharframeError, match="removes every module"):
        merge_file(save(tmp_path, good()), (0.0,) * 26, "NONE")


def test_bad_rank_option_is_a_clean_error(tmp_path, capsys):
    path = save(tmp_path, good())
    assert cli_main(["compress", str(path), "--sv-fro", "2"]) == 2
    assert "--sv-fro must be a fraction in (0, 1], not 2" in capsys.readouterr().err


def test_streaming_compress_checks_values_and_truncation(tmp_path):
    tensors = good()
    tensors["lora_unet_up_blocks_3_resnets_2_conv2.lora_down.weight"][1, 0, 0, 0] = float("nan")
    with pytest.raises(CharframeError, match=r"module lora_unet_up_blocks_3_resnets_2_conv2: lora_down\.weight contains NaN"):
        compress_file(save(tmp_path, tensors), RankRule())
    assert not (tmp_path / "x-SvR16.safetensors").exists()
    whole = save(tmp_path, good(), "whole")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(CharframeError, match=r"cut\.safetensors: not a readable safetensors file"):
        compress_file(cut, RankRule())


def test_lazy_and_eager_reads_agree(tmp_path):
    path = save(tmp_path, good("lokr"))
    eager, lazy = lio.read_network(path), lio.read_network(path, lazy=True)
    assert list(eager.modules) == list(lazy.modules)
    for name, m in eager.modules.items():
        real = lazy.materialize(lazy.modules[name])
        assert all(torch.equal(real.tensors[k], v) for k, v in m.tensors.items())
