"""SDXL ControlNet files as users have them, loaded for the tiny SDXL base: the original (LDM) layout with
`label_emb`, diffusers' layout (NoobAI-XL's files), a shallower ControlNet than its UNet (the "small"/"mid" ones),
xinsir's union ControlNet as a single file and as a diffusers folder; each gives exactly the reference model's
outputs. File names: the preprocessor and prediction NoobAI-XL's names carry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from charframe.errors import CharframeError
from charframe.models.controlnet import build_tiny_controlnet, build_tiny_union, ldm_names, load_controlnet
from charframe.models.controlnet_names import map_mismatch, name_hints
from charframe.models.tiny import TINY_SDXL_UNET, TINY_UNET, build_tiny_sdxl

BASE = dict(build_tiny_sdxl(0).unet.config)


def _inputs(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    cond = torch.rand(1, 3, 64, 64, generator=g)
    ctx = torch.randn(1, 5, 96, generator=g)
    added = {"text_embeds": torch.randn(1, 64, generator=g), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    return sample, cond, ctx, added


def outputs(model, union_mode: int | None = None):
    sample, cond, ctx, added = _inputs()
    kw = {}
    if union_mode is not None:
        types = model.config.num_control_type
        kw = dict(controlnet_cond=[cond], control_type=torch.zeros(types).scatter_(0, torch.tensor([union_mode]), 1)
                  .unsqueeze(0), control_type_idx=[union_mode])
    else:
        kw = dict(controlnet_cond=cond)
    with torch.no_grad():
        down, mid = model(sample, 10, encoder_hidden_states=ctx, added_cond_kwargs=added, return_dict=False, **kw)
    return [*down, mid]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _save(path: Path, state: dict) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_sdxl_controlnet_files_load_exactly(tmp_path: Path, layout: str) -> None:
    ref = build_tiny_controlnet(5, TINY_SDXL_UNET)
    state = ref.state_dict()
    if layout == "ldm":
        names = {d: l for l, d in ldm_names(list(state), dict(ref.config)).items()}
        state = {"control_model." + names[k]: v for k, v in state.items()}
        assert "control_model.label_emb.0.0.weight" in state and "control_model.input_blocks.7.1.transformer_blocks.1.attn2.to_k.weight" in state
    path = _save(tmp_path / f"sdxl_{layout}.safetensors", state)
    model, info = load_controlnet(path, BASE)
    assert type(model).__name__ == "ControlNetModel" and info.source == "single_file"
    assert same(outputs(ref), outputs(model))


def test_a_shallower_controlnet_takes_its_depth_from_the_file(tmp_path: Path) -> None:
    """diffusers' controlnet-*-sdxl-1.0-small/mid have fewer transformer blocks than the UNet they steer."""
    ref = build_tiny_controlnet(2, dict(TINY_SDXL_UNET, transformer_layers_per_block=(1, 1, 1)))
    path = _save(tmp_path / "controlnet-canny-sdxl-1.0-small.safetensors", ref.state_dict())
    model, _ = load_controlnet(path, BASE)
    assert list(model.config.transformer_layers_per_block) == [1, 1, 1]
    assert same(outputs(ref), outputs(model))


def test_union_file_and_folder_load_exactly(tmp_path: Path) -> None:
    """xinsir's promax file (8 control types) and a diffusers union folder; each control type steers differently."""
    ref = build_tiny_union(4)
    path = _save(tmp_path / "diffusion_pytorch_model_promax.safetensors", ref.state_dict())
    model, info = load_controlnet(path, BASE)
    assert type(model).__name__ == "ControlNetUnionModel" and model.config.num_control_type == 8
    assert same(outputs(ref, 2), outputs(model, 2)) and not same(outputs(model, 2), outputs(model, 1))
    folder = tmp_path / "controlnet-union-sdxl-1.0"
    ref.save_pretrained(str(folder))
    loaded, info = load_controlnet(folder, BASE)
    assert info.source == "diffusers" and same(outputs(ref, 3), outputs(loaded, 3))
    with pytest.raises(CharframeError, match=r"looks like an SDXL ControlNet .*it is an SD1.x model"):
        load_controlnet(path, TINY_UNET)
    with pytest.raises(CharframeError, match=r"controlnet-union-sdxl-1.0: looks like an SDXL ControlNet"):
        load_controlnet(folder, TINY_UNET)


def test_a_base_model_given_as_controlnet_says_so(tmp_path: Path) -> None:
    from charframe.testing.tiny_files import save_tiny_sdxl_single_file

    path = save_tiny_sdxl_single_file(tmp_path / "illustriousXL.safetensors")
    with pytest.raises(CharframeError, match=r"illustriousXL.safetensors: looks like an SDXL base model, not a "
                                             r"ControlNet; pass an SDXL ControlNet"):
        load_controlnet(path, BASE)


@pytest.mark.parametrize("name,pre,map_name,prediction", [
    ("noob-sdxl-controlnet-depth_midas.fp16.safetensors", "depth_midas", "depth", None),
    ("noobaiXLControlnet_epsNormalMidas.safetensors", "normal_midas", "normal", "epsilon"),
    ("v-softedge_hed.safetensors", "softedge_hed", "softedge", "v_prediction"),
    ("eps-canny.safetensors", "canny", "canny", "epsilon"),
    ("noob-sdxl-controlnet-lineart_anime", "lineart_anime", "", None),
    ("noobaiXLControlnet_vpredOpenpose.safetensors", "openpose", "openpose", "v_prediction"),
    ("control_v11p_sd15_softedge.pth", "softedge", "softedge", None),
    ("diffusion_pytorch_model_promax.safetensors", None, None, None),
])
def test_names_say_preprocessor_and_prediction(name: str, pre, map_name, prediction) -> None:
    hints = name_hints(name)
    assert (hints.preprocessor, hints.map, hints.prediction) == (pre, map_name, prediction)


def test_map_mismatch_treats_hed_as_softedge() -> None:
    softedge = name_hints("eps-softedge_hed.safetensors")
    assert not map_mismatch(softedge, "hed") and not map_mismatch(softedge, "softedge")
    assert map_mismatch(softedge, "depth") and map_mismatch(name_hints("lineart_anime"), "softedge")
    assert not map_mismatch(name_hints("controlnet-union-sdxl-1.0"), "mask")
