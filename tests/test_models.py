"""Model loading: the demo fallback, diffusers folders, the offline CLIP tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from charframe.errors import CharframeError
from charframe.models import load_sd
from charframe.tiny import save_tiny_sd
from charframe.tokenizer import clip_tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def test_no_model_gives_tiny_demo_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="charframe"):
        comps = load_sd(None)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("charframe")]
    assert len(warnings) == 1 and "RANDOM demo model" in warnings[0].getMessage()
    assert "--model" in warnings[0].getMessage()
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
