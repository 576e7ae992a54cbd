"""Model loading: the demo fallback, diffusers folders, the offline CLIP tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from charframe.errors import CharframeError
from charframe.models.load import load_sd
from charframe.testing.tiny_files import save_tiny_sd
from charframe.models.tokenizer import clip_tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def test_no_model_gives_tiny_demo_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="charframe"):
        comps = load_sd(None)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("charframe")]
    assert len(warnings) == 1 and "RANDOM demo model" in warnings[0].getMessage()
    assert "model option" in warnings[0].getMessage() and "--" not in warnings[0].getMessage()  # no CLI flag in library text
    assert "[generation] in the character file" in warnings[0].getMessage()  # what `run` reads
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="charframe"):
        load_sd(None)  # generate, train and preview of a stage each load it: said once per run
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert comps.info["base_model_version"] == "sd_v1" and comps.info["source"] == "tiny"
    assert comps.noise_scheduler.config.prediction_type == "epsilon"


def test_diffusers_folder_loads_same_weights(tiny_folder: Path) -> None:
    comps = load_sd(tiny_folder)
    ref = load_sd(None)
    for a, b in ((comps.unet, ref.unet), (comps.vae, ref.vae), (comps.text_encoder, ref.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert comps.info["source"] == "diffusers"
    assert comps.info["ss_sd_model_name"] == "tiny"
    assert comps.info["ss_sd_model_hash"] == "IsADirectory"  # what sd-scripts writes for folders
    assert comps.unet.dtype == torch.float32 and not comps.unet.training


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CharframeError, match="nope.safetensors: model not found"):
        load_sd(tmp_path / "nope.safetensors")


def test_shipped_tokenizer_reproduces_clip_ids() -> None:
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # reference ids from the original CLIP BPE tokenizer (open_clip SimpleTokenizer)
    assert tok("krnk girl, white background, (from above:1.3)").input_ids == [
        49406, 7309, 17456, 1611, 267, 1579, 5994, 267, 263, 633, 4348, 281, 272, 269, 274, 264, 49407]
    assert tok("Naïve café 日本語 🐱").input_ids == [
        49406, 1097, 35689, 563, 15304, 39121, 44353, 34002, 508, 22979, 49407]
    assert tok("masterpiece, best_quality, ultra-detailed").input_ids == [
        49406, 12066, 267, 949, 318, 3027, 267, 8118, 268, 12609, 49407]
    assert len(tok) == 49408 and tok.pad_token_id == 49407 and tok.model_max_length == 77
    padded = tok("a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and padded[-1] == 49407


def test_diffusers_folder_variants_old_clip_naming_and_fp16_only(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = save_tiny_sd(tmp_path / "tiny", seed=0)
    # older transformers saved CLIP under a `text_model.` level; such folders must still load
    te_file = folder / "text_encoder" / "model.safetensors"
    save_file({"text_model." + k: v for k, v in load_file(te_file).items()}, str(te_file))
    # fp16-only repos ship `*.fp16.safetensors`
    unet_file = folder / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v.half() for k, v in load_file(unet_file).items()}, str(unet_file.with_suffix(".fp16.safetensors")))
    unet_file.unlink()
    comps = load_sd(folder)
    ref = load_sd(None)
    te, te_ref = comps.text_encoder.state_dict(), ref.text_encoder.state_dict()
    assert all(torch.equal(te[k], te_ref[k]) for k in te_ref)
    k = "down_blocks.0.resnets.0.conv1.weight"
    assert comps.unet.dtype == torch.float32
    assert torch.equal(comps.unet.state_dict()[k], ref.unet.state_dict()[k].half().float())


@pytest.mark.parametrize("content", [b"not a pickle at all", b"PK\x03\x04" + b"\x00" * 40, b"\x80\x02}q\x00(X"])
def test_a_corrupt_ckpt_is_called_corrupt_not_unsafe(tmp_path: Path, content: bytes) -> None:
    from charframe.models.checkpoint import read_pickle

    bad = tmp_path / "model.ckpt"
    bad.write_bytes(content)
    with pytest.raises(CharframeError) as e:
        read_pickle(bad)
    assert "corrupt, truncated or not a PyTorch checkpoint" in str(e.value) and "trust" not in str(e.value)
