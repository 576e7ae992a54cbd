"""The model-family seam: every family file reads, names resolve, a UNet config or a file says its family, and the
detection table puts each family's own refusals before its recognition."""

from __future__ import annotations

from pathlib import Path

import pytest

from charframe.character import load_character
from charframe.errors import CharframeError
from charframe.families.family import (
    families, get_family, names, of_base_model_version, of_context_width, of_unet_config,
)
from charframe.models.detect import detect, signatures
from charframe.models.single_file import family_config
from charframe.models.tiny import TINY_SDXL_UNET, TINY_UNET


def test_shipped_families_read_and_describe_themselves() -> None:
    found = {f.id: f for f in families()}
    assert list(found) == ["sdxl", "sd15"]  # detection order: SDXL's refusals come before SD1.x's shape rule
    sd15, sdxl = found["sd15"], found["sdxl"]
    assert [te.lora_prefix for te in sd15.text_encoders] == ["lora_te"]
    assert [te.lora_prefix for te in sdxl.text_encoders] == ["lora_te1", "lora_te2"]
    assert [te.pad_token for te in sdxl.text_encoders] == ["<|endoftext|>", "!"]
    assert (sd15.unet_names, sdxl.unet_names) == ("diffusers", "ldm")
    assert (sd15.resolution, sdxl.resolution) == (512, 1024)
    assert (sd15.base_model_version, sdxl.base_model_version) == ("sd_v1", "sdxl_base_v1-0")
    assert [len(f.ids) for f in sdxl.block_forms] == [20, 12, 26] and [len(f.ids) for f in sd15.block_forms] == [26, 17]
    assert names() == "SD1.x and SDXL"


@pytest.mark.parametrize("alias, fid", [("SDXL", "sdxl"), ("illustrious", "sdxl"), ("NoobAI", "sdxl"), ("pony", "sdxl"),
                                        ("sd1.5", "sd15"), ("sd_v1", "sd15"), (None, "sd15"), ("", "sd15")])
def test_names_and_aliases(alias, fid) -> None:
    assert get_family(alias).id == fid


def test_unknown_family_is_one_line() -> None:
    with pytest.raises(CharframeError, match=r"^family: unknown model family 'sd3'; known: sdxl \(SDXL\), sd15 \(SD1.x\)$"):
        get_family("sd3")


def test_a_unet_config_says_its_family() -> None:
    assert of_unet_config(family_config("sdxl").unet).id == "sdxl"
    assert of_unet_config(family_config("sd15").unet).id == "sd15"
    assert of_unet_config(TINY_SDXL_UNET).id == "sdxl" and of_unet_config(TINY_UNET).id == "sd15"
    assert of_context_width(2048).id == "sdxl" and of_context_width(768).id == "sd15" and of_context_width(1024) is None
    assert of_base_model_version("sdxl_base_v1-0").id == "sdxl" and of_base_model_version("sd_v1").id == "sd15"
    assert of_base_model_version("sd_v2") is None


def test_detection_table_order() -> None:
    ids = [s.id for s in signatures()]
    assert ids.index("lora") < ids.index("sdxl_refiner") < ids.index("sdxl_inpainting") < ids.index("sdxl") < ids.index("sd_v1")
    assert ids.index("sd2") < ids.index("sd_v1") < ids.index("inpainting") < ids.index("vae")
    assert [s.family for s in signatures() if s.supported] == ["sdxl", "sd15"]
    unet_in = "model.diffusion_model.input_blocks.0.0.weight"
    assert detect({unet_in: (320, 4, 3, 3), "conditioner.embedders.0.transformer.x": (1,)}).family == "sdxl"
    assert detect({unet_in: (320, 4, 3, 3), "cond_stage_model.transformer.x": (1,)}).family == "sd15"
    assert detect({unet_in: (320, 9, 3, 3), "cond_stage_model.transformer.x": (1,)}).id == "inpainting"


def test_character_file_names_the_family(tmp_path: Path) -> None:
    path = tmp_path / "Characters" / "krnk.toml"
    path.parent.mkdir()
    path.write_text('keyword = "krnk"\n[generation]\nfamily = "illustrious"\nprediction = "v_prediction"\n', encoding="utf-8")
    g = load_character(path).generation
    assert (g.family, g.prediction) == ("illustrious", "v_prediction")
    path.write_text('keyword = "krnk"\n[generation]\nfamily = "flux"\n', encoding="utf-8")
    with pytest.raises(CharframeError, match=r"krnk.toml:3: generation.family: unknown model family 'flux'; known: sdxl"):
        load_character(path)
