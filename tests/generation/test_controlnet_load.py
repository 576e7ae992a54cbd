"""ControlNet loading: LDM single files (.pth weights-only / .safetensors, with or without `control_model.`),
diffusers files and folders, and refusals of files that are not an SD1.x ControlNet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from charframe.errors import CharframeError
from charframe.models.controlnet import (
    build_tiny_controlnet, controlnet_config, ldm_names, load_controlnet, sd15_controlnet_config,
)
from charframe.models.tiny import TINY_UNET
from charframe.testing.ldm_layout import to_ldm_checkpoint
from charframe.models.tiny import build_tiny_sd


def ldm_state(model, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    names = {d: l for l, d in ldm_names(list(model.state_dict()), dict(model.config)).items()}
    return {prefix + names[k]: v.clone().contiguous() for k, v in model.state_dict().items()}


def outputs(model, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    cond = torch.rand(1, 3, 64, 64, generator=g)
    ctx = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        down, mid = model(sample, 10, encoder_hidden_states=ctx, controlnet_cond=cond, return_dict=False)
    return [*down, mid]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)


@pytest.mark.parametrize("name,prefix", [("control_v11p_sd15_softedge.pth", ""),
                                         ("control_sd15_hed.safetensors", "control_model.")])
def test_ldm_round_trip_gives_identical_outputs(tmp_path: Path, name: str, prefix: str) -> None:
    ref = build_tiny_controlnet(5)
    state = ldm_state(ref, prefix)
    assert f"{prefix}input_hint_block.14.weight" in state
    assert f"{prefix}zero_convs.11.0.weight" in state and f"{prefix}middle_block_out.0.weight" in state
    path = tmp_path / name
    if path.suffix == ".pth":
        torch.save(state, path)
    else:  # WebUI 1.0 files also carry the whole SD model beside the control part
        full = {k: v.contiguous() for k, v in to_ldm_checkpoint(*_tiny_sd_parts()).items()}
        save_file(full | state, str(path))
    model, info = load_controlnet(path, TINY_UNET)
    assert info.name == path.stem and len(info.hash) == 8 and info.label().endswith(f"[{info.hash}]")
    assert same(outputs(ref), outputs(model))


def _tiny_sd_parts():
    c = build_tiny_sd(0)
    return c.unet, c.vae, c.text_encoder


def test_key_table_agrees_with_diffusers_converter() -> None:
    """An independent check of the table: diffusers' own LDM converter maps our LDM names to the same keys."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    ref = build_tiny_controlnet(1)
    theirs = convert_controlnet_checkpoint(ldm_state(ref), dict(ref.config))
    ours = ref.state_dict()
    assert set(theirs) == set(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_sd15_key_table_covers_real_layout() -> None:
    """The SD1.5 config's LDM names are the published ones (counts and a few fixed names)."""
    from charframe.models.controlnet import build_controlnet

    config = sd15_controlnet_config()
    model = build_controlnet(config, meta=True)
    names = ldm_names(list(model.state_dict()), config)
    assert len(names) == len(model.state_dict())
    for key in ("input_hint_block.14.weight", "zero_convs.11.0.weight", "middle_block_out.0.bias",
                "input_blocks.3.0.op.weight", "input_blocks.11.0.out_layers.3.weight", "time_embed.2.weight",
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.4.0.skip_connection.weight"):
        assert key in names, key
    assert config == controlnet_config(json.loads((Path(__file__).parents[2] / "charframe/data/models/sd15/unet/config.json").read_text()))


def test_diffusers_folder_and_file(tmp_path: Path) -> None:
    ref = build_tiny_controlnet(2)
    ref.save_pretrained(tmp_path / "cn", safe_serialization=True)
    model, info = load_controlnet(tmp_path / "cn", TINY_UNET)
    assert info.source == "diffusers" and same(outputs(ref), outputs(model))
    model, info = load_controlnet(tmp_path / "cn" / "diffusion_pytorch_model.safetensors", TINY_UNET)
    assert info.source == "single_file" and same(outputs(ref), outputs(model))


def test_tiny_controlnet_is_deterministic_and_steers() -> None:
    a, b = build_tiny_controlnet(0), build_tiny_controlnet(0)
    assert same(outputs(a), outputs(b))
    assert outputs(a)[0].abs().sum() > 0  # zero convs are not zero: the control image matters


def _save(path: Path, state: dict) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("kind,message", [
    ("lora", "LoRA"), ("vae", "VAE"), ("sd", "SD1.x base model"), ("sdxl", "SDXL"), ("missing", "not found"),
    ("garbage", "not a readable"), ("truncated", "incomplete"),
])
def test_wrong_files_are_refused_before_loading(tmp_path: Path, kind: str, message: str) -> None:
    c = build_tiny_sd(0)
    path = tmp_path / f"{kind}.safetensors"
    if kind == "lora":
        _save(path, {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 16)})
    elif kind == "vae":
        _save(path, {k: v for k, v in c.vae.state_dict().items()})
    elif kind == "sd":
        _save(path, to_ldm_checkpoint(c.unet, c.vae, c.text_encoder))
    elif kind == "sdxl":
        big = build_tiny_controlnet(0, dict(TINY_UNET, cross_attention_dim=2048))
        _save(path, ldm_state(big))
    elif kind == "garbage":
        path.write_bytes(b"not a model at all")
    elif kind == "truncated":
        state = ldm_state(build_tiny_controlnet(0))
        _save(path, {k: v for k, v in state.items() if "zero_convs.3" not in k})
    with pytest.raises(CharframeError, match=message) as err:
        load_controlnet(path, TINY_UNET)
    assert str(path) in str(err.value)


def test_incomplete_hint_encoder_is_one_clear_line(tmp_path: Path) -> None:
    state = ldm_state(build_tiny_controlnet(0))
    only = {k: v for k, v in state.items() if not k.startswith("control_model.input_hint_block.")
            or k.startswith("control_model.input_hint_block.0.")}
    for name, kept in (("hint0.safetensors", only),
                       ("bare.safetensors", {k: v for k, v in state.items() if "input_hint_block.0." in k})):
        with pytest.raises(CharframeError) as err:
            load_controlnet(_save(tmp_path / name, kept), TINY_UNET)
        msg = str(err.value)
        assert msg.startswith(str(tmp_path / name)) and "incomplete ControlNet" in msg and "input_hint_block.0" in msg
        assert "\n" not in msg


def test_sdxl_layout_without_label_emb_is_named_sdxl(tmp_path: Path) -> None:
    """SDXL ControlNets have no attention in their first block, and some files lack label_emb: the text-context
    width of any cross-attention layer still says SDXL."""
    state = ldm_state(build_tiny_controlnet(0, dict(TINY_UNET, cross_attention_dim=2048)))
    state = {k: v for k, v in state.items() if ".input_blocks.1.1." not in k and "label_emb" not in k}
    with pytest.raises(CharframeError, match=r"looks like SDXL ControlNet \(text context 2048 wide"):
        load_controlnet(_save(tmp_path / "xl.safetensors", state), TINY_UNET)


@pytest.mark.parametrize("keys", [
    {"adapter.conv_in.weight": (320, 192, 3, 3), "adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)},
    {"conv_in.weight": (320, 192, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)},
])
def test_t2i_adapter_is_named(tmp_path: Path, keys: dict) -> None:
    path = _save(tmp_path / "t2iadapter_sketch_sd15v2.safetensors", {k: torch.zeros(s) for k, s in keys.items()})
    with pytest.raises(CharframeError, match="looks like a T2I-Adapter") as err:
        load_controlnet(path, TINY_UNET)
    assert "diffusers-format UNet" not in str(err.value)


def test_diffusers_folder_with_only_fp16_weights_loads(tmp_path: Path) -> None:
    ref = build_tiny_controlnet(4)
    ref.save_pretrained(tmp_path / "cn", safe_serialization=True, variant="fp16")
    assert [p.name for p in (tmp_path / "cn").glob("*.safetensors")] == ["diffusion_pytorch_model.fp16.safetensors"]
    model, info = load_controlnet(tmp_path / "cn", TINY_UNET)
    assert info.source == "diffusers" and same(outputs(ref), outputs(model))
    (tmp_path / "cn" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(CharframeError, match="no ControlNet weights in this folder") as err:
        load_controlnet(tmp_path / "cn", TINY_UNET)
    assert ".bin" not in str(err.value).split("(")[0]


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickle_refusal_is_one_plain_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "control_evil.pth"
    torch.save({"input_hint_block.0.weight": _Evil()}, path)
    with pytest.raises(CharframeError) as err:
        load_controlnet(path, TINY_UNET)
    msg = str(err.value)
    assert "\x1b" not in msg and "\n" not in msg and "pickled code ran" not in capsys.readouterr().out
    assert msg.startswith(f"{path}: unsafe: the pickle would import or run code, which torch's weights-only loader "
                          "refuses (")
    assert re.search(r"(builtins\.)?print", msg)  # what it would have imported
    assert msg.endswith("pass the .safetensors file instead")


def test_controlnet_label_carries_webuis_legacy_hash(tmp_path: Path) -> None:
    """sd-webui-controlnet lists models as `name [legacy hash]` (sha256 of the 64 KiB at 1 MiB, 8 hex digits)."""
    import hashlib

    state = ldm_state(build_tiny_controlnet(1))
    state["control_model.pad"] = torch.arange(400_000, dtype=torch.float32)  # make the file pass 1.1 MiB
    path = _save(tmp_path / "control_v11p_sd15_softedge.safetensors", state)
    data = path.read_bytes()
    assert len(data) > 0x110000
    _, info = load_controlnet(_save(tmp_path / "c2.safetensors", {k: v for k, v in state.items() if k != "control_model.pad"}),
                              TINY_UNET)
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    from charframe.models.controlnet import ControlNetInfo
    from charframe.models.checkpoint import model_file_hashes
    assert model_file_hashes(path)[0] == legacy
    assert info.hash == model_file_hashes(tmp_path / "c2.safetensors")[0] != model_file_hashes(tmp_path / "c2.safetensors")[1][:8]
    assert ControlNetInfo("control_v11p_sd15_softedge", legacy).label() == f"control_v11p_sd15_softedge [{legacy}]"
