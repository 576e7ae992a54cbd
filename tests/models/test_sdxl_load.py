"""SDXL loading, offline: single files in the original layout (`conditioner.embedders.0/1`, `.safetensors` and
weights-only `.ckpt`), diffusers folders, a replacement VAE, v-prediction files, and SDXL's bad input.

The reference for a single file is diffusers' own `StableDiffusionXLPipeline.from_single_file` on the same file
(offline: `config=` a local folder of the tiny model's configs and tokenizers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.models.load import load_sd
from charframe.models.single_file import empty_encoders, empty_modules, family_config
from charframe.models.tiny import build_tiny_sdxl
from charframe.models.tokenizer import clip_tokenizer
from charframe.testing.ldm_layout import SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX, to_sdxl_checkpoint, vae_to_ldm
from test_single_file import _same_weights as _equal  # same folder: one weight comparison for both families
from charframe.testing.tiny_files import (
    save_tiny_sdxl,
    save_tiny_sdxl_config,
    save_tiny_sdxl_single_file,
)

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sdxl")
    return {
        "safetensors": save_tiny_sdxl_single_file(root / "illustrious-tiny.safetensors", seed=3),
        "ckpt": save_tiny_sdxl_single_file(root / "illustrious-tiny.ckpt", seed=3),
        "novae": save_tiny_sdxl_single_file(root / "pony-novae.safetensors", seed=3, with_vae=False),
        "vpred": save_tiny_sdxl_single_file(root / "noobai-vpred.safetensors", seed=3, v_pred=True),
        "config": save_tiny_sdxl_config(root / "tiny-sdxl-config"),
        "folder": save_tiny_sdxl(root / "tiny-sdxl-diffusers", seed=3),
    }


@pytest.fixture(scope="module")
def ref():
    return build_tiny_sdxl(seed=3)


@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
def test_single_file_loads_component_wise_equal_to_diffusers_from_single_file(kind, files, ref) -> None:
    from diffusers import StableDiffusionXLPipeline

    comps = load_sd(files[kind], config=files["config"])
    assert comps.family == "sdxl" and comps.info["base_model_version"] == "sdxl_base_v1-0"
    assert comps.info["prediction_type"] == "epsilon" and not comps.info["zero_terminal_snr"]
    pipe = StableDiffusionXLPipeline.from_single_file(str(files["safetensors"]), config=str(files["config"]),
                                                      local_files_only=True)
    for part in PARTS:
        assert _equal(getattr(comps, part), getattr(pipe, part)), part
        assert _equal(getattr(comps, part), getattr(ref, part)), part
    assert comps.tokenizer_2.pad_token == "!" and comps.tokenizer.pad_token == "<|endoftext|>"


def test_writer_layout_is_the_original_one(ref) -> None:
    state = to_sdxl_checkpoint(ref.unet, ref.vae, ref.text_encoder, ref.text_encoder_2)
    g = SDXL_CLIP_G_PREFIX
    width = ref.text_encoder_2.config.hidden_size
    assert state[g + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * width, width)  # fused q/k/v
    assert torch.equal(state[g + "text_projection"], ref.text_encoder_2.text_projection.weight.T)
    assert SDXL_CLIP_L_PREFIX + "encoder.layers.0.self_attn.q_proj.weight" in state
    assert "model.diffusion_model.label_emb.0.0.weight" in state  # the pooled-text + time-id embedding
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in state  # SDXL up block 0 upsampler after attention
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in state)  # level 0 has no attention


def test_shipped_configs_are_sdxl_base_sized() -> None:
    """The shipped configs build SDXL 1.0's modules (parameter counts of the released model), on meta."""
    cfg = family_config("sdxl")
    unet, vae, _ = empty_modules(cfg)
    encoders = empty_encoders(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 2_567_463_684 and count(vae) == 83_653_863
    assert count(encoders["text_encoder"]) == 123_060_480 and count(encoders["text_encoder_2"]) == 694_659_840
    assert cfg.unet["cross_attention_dim"] == 768 + 1280


def test_offline_tokenizer_2_is_clip_with_pad_bang() -> None:
    one, two = clip_tokenizer(), clip_tokenizer(pad_token="!")
    a = one("1girl, solo, cat ears", padding="max_length", max_length=77).input_ids
    b = two("1girl, solo, cat ears", padding="max_length", max_length=77).input_ids
    n = a.index(49407) + 1
    assert a[:n] == b[:n] and set(a[n:]) == {49407} and set(b[n:]) == {0}  # "!" is id 0


def test_diffusers_folder_loads_both_encoders_and_tokenizers(files, ref) -> None:
    comps = load_sd(files["folder"])
    assert comps.family == "sdxl" and comps.info["source"] == "diffusers"
    for part in PARTS:
        assert _equal(getattr(comps, part), getattr(ref, part)), part
    assert comps.tokenizer_2.pad_token == "!"
    assert type(comps.pipeline()).__name__ == "StableDiffusionXLPipeline"


def test_v_pred_file_is_detected_and_character_override_wins(files) -> None:
    comps = load_sd(files["vpred"], config=files["config"])
    assert comps.info["prediction_type"] == "v_prediction" and comps.info["zero_terminal_snr"]
    assert comps.noise_scheduler.alphas_cumprod[-1] == 0  # zero terminal SNR: the last step is pure noise
    eps = load_sd(files["vpred"], config=files["config"], prediction="epsilon")
    assert eps.info["prediction_type"] == "epsilon" and not eps.info["zero_terminal_snr"]
    forced = load_sd(files["safetensors"], config=files["config"], prediction="v_prediction")
    assert forced.info["prediction_type"] == "v_prediction"
    with pytest.raises(CharframeError, match="prediction must be one of epsilon, v_prediction"):
        load_sd(files["safetensors"], config=files["config"], prediction="v")


def test_replacement_vae_in_both_layouts(files, ref, tmp_path: Path) -> None:
    """sdxl_vae.safetensors (original layout) and the fp16-fix VAE's diffusers file replace a missing VAE."""
    with pytest.raises(CharframeError, match=r"pony-novae.safetensors: the checkpoint has no VAE weights .*sdxl_vae"):
        load_sd(files["novae"], config=files["config"])
    other = build_tiny_sdxl(seed=9).vae
    ldm = tmp_path / "sdxl_vae.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(other.state_dict(), 4, prefix="").items()}, str(ldm))
    diffusers_file = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(diffusers_file))
    for vae in (ldm, diffusers_file):
        comps = load_sd(files["novae"], vae=vae, config=files["config"])
        assert _equal(comps.vae, other) and _equal(comps.unet, ref.unet)
        assert comps.vae.config.scaling_factor == 0.13025 and comps.info["ss_vae_name"] == vae.name


def test_family_choice_must_match_the_file(files) -> None:
    assert load_sd(files["safetensors"], config=files["config"], family="illustrious").family == "sdxl"
    with pytest.raises(CharframeError) as err:
        load_sd(files["safetensors"], config=files["config"], family="sd15")
    assert str(err.value).startswith(f"{files['safetensors']}: is an SDXL checkpoint but family says SD1.x")
    with pytest.raises(CharframeError, match="tiny-sdxl-diffusers: is an SDXL model folder but family says SD1.x"):
        load_sd(files["folder"], family="sd1")


def test_tiny_demo_model_follows_the_family() -> None:
    assert load_sd(None, family="sdxl").family == "sdxl"
    assert load_sd(None).family == "sd15"


def _shapes_file(tmp_path: Path, name: str, drop: str = "", **extra) -> Path:
    """A tiny SDXL single file missing every key under `drop`, plus `extra` keys (zeros of the given shapes)."""
    comps = build_tiny_sdxl(0)
    state = to_sdxl_checkpoint(comps.unet, comps.vae, comps.text_encoder, comps.text_encoder_2)
    state = {k: v.contiguous() for k, v in state.items() if not (drop and k.startswith(drop))}
    state |= {k: torch.zeros(s) for k, s in extra.items()}
    save_file(state, str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize(
    "drop, expected",
    [
        ("conditioner.embedders.1.", "SDXL UNet found but no OpenCLIP ViT-bigG text encoder weights (conditioner.embedders.1.model.*)"),
        ("conditioner.embedders.0.", "SDXL UNet found but no CLIP ViT-L text encoder weights (conditioner.embedders.0.transformer.*)"),
    ],
)
def test_pony_or_illustrious_file_without_a_text_encoder_is_one_line(drop, expected, tmp_path: Path) -> None:
    path = _shapes_file(tmp_path, "ponyDiffusionV6XL-unet-vae.safetensors", drop)
    with pytest.raises(CharframeError) as err:
        load_sd(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {expected}") and "\n" not in msg and "text encoders)" in msg


def test_refiner_and_inpainting_files_are_named(tmp_path: Path) -> None:
    refiner = tmp_path / "sd_xl_refiner_1.0.safetensors"
    save_file({"conditioner.embedders.0.model.text_projection": torch.zeros(4, 4),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
               "model.diffusion_model.label_emb.0.0.weight": torch.zeros(4, 4)}, str(refiner))
    with pytest.raises(CharframeError) as err:
        load_sd(refiner)
    assert str(err.value).startswith(f"{refiner}: looks like the SDXL refiner") and "SDXL base model" in str(err.value)
    inpaint = _shapes_file(tmp_path, "illustrious-inpainting.safetensors",
                           **{"model.diffusion_model.input_blocks.0.0.weight": (16, 9, 3, 3)})
    with pytest.raises(CharframeError, match=r"illustrious-inpainting.safetensors: looks like an SDXL inpainting model "
                                             r"\(9 UNet input channels\); use the non-inpainting version"):
        load_sd(inpaint)


def test_support_table_grants_training_and_not_yet_generation() -> None:
    from charframe.families.family import require

    with pytest.raises(CharframeError, match=r"x.safetensors: is an SDXL model; generating images with SDXL models is not "
                                             r"yet supported \(it works with SD1.x models"):
        require(get_family("sdxl"), "generate", "x.safetensors")
    require(get_family("sdxl"), "train", "x.safetensors")
    require(get_family("sd15"), "generate", "x.safetensors")

