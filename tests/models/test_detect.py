"""Architecture detection: SD1.x (and SDXL, tests/models/test_sdxl.py) load, everything else is refused by name
before anything is built.

The checkpoints here hold only the telltale keys with tiny tensors (shape-based signatures carry the
one real shape that matters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from charframe.models.detect import check_single_file, detect
from charframe.errors import CharframeError
from charframe.models.load import load_sd
from charframe.models.single_file import check_shapes, convert, empty_modules, resolve_config, sd15_config

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
CLIP_POS = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"


def _file(tmp_path: Path, name: str, shapes: dict[str, tuple[int, ...]]) -> Path:
    path = tmp_path / name
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    return path


REFUSED = {
    "sdxl_refiner": ({"conditioner.embedders.0.model.text_projection": (4, 4), UNET_IN: (4, 4, 3, 3)},
                     "looks like the SDXL refiner"),
    "sdxl_inpainting": ({"model.diffusion_model.label_emb.0.0.weight": (4, 4), UNET_IN: (4, 9, 3, 3)},
                        "looks like an SDXL inpainting model"),
    "sd2_openclip": ({"cond_stage_model.model.token_embedding.weight": (8, 4), UNET_IN: (4, 4, 3, 3)}, "looks like SD2.x"),
    "sd2_context": ({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 1024),
                     UNET_IN: (4, 4, 3, 3), CLIP_POS: (77, 4)}, "looks like SD2.x"),
    "inpainting": ({UNET_IN: (4, 9, 3, 3), CLIP_POS: (77, 4)}, "looks like an inpainting model"),
    "pix2pix": ({UNET_IN: (4, 8, 3, 3), CLIP_POS: (77, 4)}, "looks like InstructPix2Pix"),
    "sd3": ({"model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": (4,)}, "looks like SD3"),
    "flux": ({"double_blocks.0.img_attn.norm.key_norm.scale": (4,)}, "looks like Flux"),
    "lora": ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 4)}, "looks like a LoRA"),
    "vae": ({"encoder.conv_in.weight": (4, 3, 3, 3), "decoder.conv_in.weight": (4, 4, 3, 3)}, "looks like a VAE"),
    "unknown": ({"foo.weight": (2,)}, "not a recognised Stable Diffusion checkpoint"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_single_files_are_refused_clearly(name: str, tmp_path: Path) -> None:
    shapes, expected = REFUSED[name]
    path = _file(tmp_path, f"{name}.safetensors", shapes)
    with pytest.raises(CharframeError) as err:
        load_sd(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and expected in msg, msg
    if name in ("sd2_openclip", "sd3", "flux"):
        assert msg.endswith("charframe supports SD1.x and SDXL checkpoints (not yet supported)")
    assert "--" not in msg  # no CLI flag in a library message
    if name == "vae":
        assert "as the VAE" in msg
    if name == "lora":
        assert "base model it was trained on as the model" in msg and "LoRA to continue from" in msg


def test_unet_without_text_encoder_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "unet-only.safetensors", {UNET_IN: (4, 4, 3, 3)})
    with pytest.raises(CharframeError, match=r"unet-only.safetensors: SD1.x UNet found but no CLIP text encoder"):
        load_sd(path)


def _folder(tmp_path: Path, unet: dict, index: dict | None = None) -> Path:
    (tmp_path / "m" / "unet").mkdir(parents=True)
    (tmp_path / "m" / "unet" / "config.json").write_text(json.dumps(unet))
    if index is not None:
        (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    return tmp_path / "m"


@pytest.mark.parametrize(
    "unet, index, expected",
    [
        ({"in_channels": 4}, {"_class_name": "StableDiffusionXLPipeline"}, "is not an SDXL UNet"),
        ({"in_channels": 4, "addition_embed_type": "text_time"}, {"_class_name": "StableDiffusionXLImg2ImgPipeline"},
         "the SDXL refiner"),
        ({"in_channels": 9}, {"_class_name": "StableDiffusionInpaintPipeline"}, "inpainting"),
        ({"in_channels": 4, "cross_attention_dim": 1024}, {"_class_name": "StableDiffusionPipeline"}, "SD2.x"),
    ],
)
def test_unsupported_diffusers_folders_are_refused(unet, index, expected, tmp_path: Path) -> None:
    folder = _folder(tmp_path, unet, index)
    with pytest.raises(CharframeError) as err:
        load_sd(folder)
    assert str(err.value).startswith(f"{folder}: looks like") and expected in str(err.value)
    assert "not yet supported" in str(err.value)


def test_transformer_folder_and_non_model_folder(tmp_path: Path) -> None:
    (tmp_path / "flux" / "transformer").mkdir(parents=True)
    with pytest.raises(CharframeError, match="looks like a transformer"):
        load_sd(tmp_path / "flux")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharframeError, match=r"empty: not a diffusers model folder"):
        load_sd(tmp_path / "empty")


@pytest.fixture(scope="module")
def sd15_shapes() -> dict[str, tuple[int, ...]]:
    """Key → shape of a real SD1.5 single file (LDM layout), from meta modules: no memory used."""
    from charframe.testing.ldm_layout import to_ldm_checkpoint

    unet, vae, te = empty_modules(sd15_config())
    shapes = {k: tuple(v.shape) for k, v in to_ldm_checkpoint(unet, vae, te).items()}
    shapes["cond_stage_model.transformer.text_model.embeddings.position_ids"] = (1, 77)  # older files have it
    return shapes


def test_sd15_layout_is_detected_and_fits_the_shipped_configs(sd15_shapes) -> None:
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
    assert [sum(k.startswith(p) for k in sd15_shapes) for p in prefixes] == [686, 248, 197]
    assert sd15_shapes[UNET_IN] == (320, 4, 3, 3)
    assert detect(sd15_shapes).id == "sd_v1"
    check_single_file(Path("v1-5.safetensors"), sd15_shapes)
    meta = {k: torch.empty(s, device="meta") for k, s in sd15_shapes.items()}
    modules = empty_modules(sd15_config())
    for module, state, what in zip(modules, convert(meta, *modules), ("UNet", "VAE", "text encoder")):
        check_shapes(Path("v1-5.safetensors"), module, state, what, "SD1.5")


def _v1_yaml(parameterization: str | None = None) -> dict:
    """An original SD1.x inference config (LatentDiffusion, CLIP ViT-L/14 conditioning)."""
    params = {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "scale_factor": 0.18215,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": {
            "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
            "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
            "num_heads": 8, "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 768}},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
            "embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                         "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                         "attn_resolutions": [], "dropout": 0.0}}},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
    }
    if parameterization:
        params["parameterization"] = parameterization
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


def test_original_yaml_config_gives_sd15_components(sd15_shapes, tmp_path: Path) -> None:
    ckpt = tmp_path / "anime.safetensors"
    (tmp_path / "anime.yaml").write_text(yaml.safe_dump(_v1_yaml()))  # WebUI's "yaml beside the model"
    cfg = resolve_config(ckpt, None, sd15_shapes)
    assert cfg.source == str(tmp_path / "anime.yaml")
    ref = sd15_config()
    for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
                "down_block_types", "up_block_types", "in_channels"):
        assert (list(cfg.unet[key]) if isinstance(cfg.unet[key], (list, tuple)) else cfg.unet[key]) == ref.unet[key]
    assert list(cfg.vae["block_out_channels"]) == ref.vae["block_out_channels"]
    assert cfg.vae["scaling_factor"] == 0.18215 and cfg.scheduler["prediction_type"] == "epsilon"
    modules = empty_modules(cfg)
    meta = {k: torch.empty(s, device="meta") for k, s in sd15_shapes.items()}
    for module, state in zip(modules, convert(meta, *modules)):
        check_shapes(ckpt, module, state, "part", cfg.source)

    vpred = tmp_path / "vpred.yaml"
    vpred.write_text(yaml.safe_dump(_v1_yaml("v")))
    assert resolve_config(ckpt, vpred, sd15_shapes).scheduler["prediction_type"] == "v_prediction"


def test_bad_config_arguments(tmp_path: Path, sd15_shapes) -> None:
    junk = tmp_path / "junk.yaml"
    junk.write_text("model: 3\n")
    with pytest.raises(CharframeError, match=r"junk.yaml: not an original Stable Diffusion config yaml"):
        resolve_config(tmp_path / "m.safetensors", junk, sd15_shapes)
    with pytest.raises(CharframeError, match=r"config must be a diffusers folder or an original .yaml"):
        resolve_config(tmp_path / "m.safetensors", tmp_path / "nothing.json", sd15_shapes)
    (tmp_path / "emptycfg").mkdir()
    with pytest.raises(CharframeError, match=r"emptycfg: no unet/"):
        resolve_config(tmp_path / "m.safetensors", tmp_path / "emptycfg", sd15_shapes)
