"""The built-in trainer on the tiny SDXL model: sd-scripts' SDXL conditioning (both encoders, pooled embedding,
size/crop time ids), UNet-only by default, v-prediction with zero terminal SNR, min-SNR / debiased weighting,
cached text-encoder outputs that keep caption variants, and files diffusers' SDXL pipeline loads."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from charframe.errors import CharframeError
from charframe.families.sdxl import time_ids
from charframe.lora.io import load_lora_file, read_network
from charframe.lora.targets import kohya_targets
from charframe.models.tiny import build_tiny_sdxl
from charframe.training.conditioning import TextCache, condition
from charframe.training.data import load_dataset
from charframe.training.engines.builtin import train
from charframe.training.images import load_pixels
from charframe.training.loss import all_snr, denoise_loss, snr_weights
from charframe.training.plan import make_plan
from charframe.training.sdxl import sdxl_text
from train_data import charframe_dataset, one_thread  # noqa: F401 (autouse fixture)

LR = 20000


def _plan(root: Path, logic: str, steps: int, **kw):
    toml = charframe_dataset(root, n=1, repeats=1, batch=1)
    return make_plan(logic, 4, LR, steps, dataset=toml, out="krnk", output_dir=str(root / "LoRAOutput"),
                     logging_dir=str(root / "LoRALog"), **kw)


# sd-scripts' own values: BucketManager.get_crop_ltrb (library/train_util.py, 48d368fa) and the flip rule of its
# dataset __getitem__, as (bucket w, h), (file w, h), flipped → (orig h, orig w, crop top, crop left, target h, target w)
SD_SCRIPTS_TIME_IDS = [
    ((1024, 1024), (1200, 1000), False, (1000, 1200, 85, 0, 1024, 1024)),
    ((832, 1216), (900, 1400), False, (1400, 900, 0, 25, 1216, 832)),
    ((1216, 832), (3000, 1900), True, (1900, 3000, 30, 0, 832, 1216)),
    ((768, 1344), (1000, 1600), False, (1600, 1000, 57, 0, 1344, 768)),
    ((1024, 1024), (1001, 1200), False, (1200, 1001, 0, 84, 1024, 1024)),
    ((1024, 1024), (1001, 1200), True, (1200, 1001, 0, 85, 1024, 1024)),  # the flipped left is bucket − right
    ((512, 512), (512, 512), True, (512, 512, 0, 0, 512, 512)),
]


@pytest.mark.parametrize("bucket, size, flipped, expected", SD_SCRIPTS_TIME_IDS)
def test_time_ids_are_sd_scripts(bucket, size, flipped, expected) -> None:
    assert time_ids(size, bucket, flipped) == expected


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sdxl(seed=0)


def test_text_conditioning_equals_diffusers_sdxl_encode_prompt(tiny) -> None:
    """Penultimate states of both encoders side by side, pooled from OpenCLIP-G at the first end-of-text token."""
    captions = ["krnk, white background, from above", "1girl, solo, cat ears"]
    with torch.no_grad():
        states, pooled = sdxl_text(tiny, captions)
        ref_states, _, ref_pooled, _ = tiny.pipeline().encode_prompt(captions, do_classifier_free_guidance=False)
    assert states.shape == (2, 77, 32 + 64) and pooled.shape == (2, 64)
    torch.testing.assert_close(states, ref_states)
    torch.testing.assert_close(pooled, ref_pooled)


def test_text_cache_encodes_each_caption_variant_once(tiny) -> None:
    recipe = make_plan("Lora1x1A50p-AdamW8", 4, 100, 1, dataset="d.toml", out="x").recipe
    cache = TextCache(limit=2)
    sizes, bucket = [(80, 64, False), (64, 96, True)], (64, 64)
    with torch.no_grad():
        plain = condition(tiny, ["a", "b"], recipe, sizes=sizes, bucket=bucket)
        first = condition(tiny, ["a", "b"], recipe, sizes=sizes, bucket=bucket, cache=cache)
        again = condition(tiny, ["b", "a"], recipe, sizes=sizes[::-1], bucket=bucket, cache=cache)
        third = condition(tiny, ["c", "a"], recipe, sizes=sizes, bucket=bucket, cache=cache)  # past the limit: still right
    assert cache.encoded == 3 and set(cache.entries) == {"a", "b"}
    torch.testing.assert_close(first[0], plain[0])
    torch.testing.assert_close(again[0], plain[0].flip(0))
    torch.testing.assert_close(first[1]["text_embeds"], plain[1]["text_embeds"])
    assert first[1]["time_ids"].tolist() == [list(time_ids((80, 64), bucket)), list(time_ids((64, 96), bucket, True))]
    torch.testing.assert_close(third[0][1], plain[0][0])


def test_snr_weights_are_sd_scripts_formulas() -> None:
    recipe = make_plan("Lora1x1A50p-AdamW8", 4, 100, 1, dataset="d.toml", out="x", min_snr_gamma=5).recipe
    eps = build_tiny_sdxl(0).noise_scheduler
    v = build_tiny_sdxl(0, prediction_type="v_prediction").noise_scheduler
    t = torch.tensor([0, 10, 500, 998])
    ac = eps.alphas_cumprod.double()
    snr = (ac / (1 - ac))[t]
    torch.testing.assert_close(snr_weights(eps, t, recipe).double(), torch.minimum(snr, torch.tensor(5.0)) / snr)
    snr_v = all_snr(v).double()[t]
    torch.testing.assert_close(snr_weights(v, t, recipe).double(), torch.minimum(snr_v, torch.tensor(5.0)) / (snr_v + 1))
    debiased = make_plan("Lora1x1A50p-AdamW8", 4, 100, 1, dataset="d.toml", out="x", debiased_estimation=True).recipe
    torch.testing.assert_close(snr_weights(eps, t, debiased).double(), 1 / torch.minimum(snr, torch.tensor(1000.0)).sqrt())
    assert all_snr(v)[-1] == 0  # zero terminal SNR
    plain = make_plan("Lora1x1A50p-AdamW8", 4, 100, 1, dataset="d.toml", out="x").recipe
    assert snr_weights(eps, t, plain) == 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """25 steps of Lora3x3 on the tiny SDXL model (UNet only, the default); eval loss before and after."""
    root = tmp_path_factory.mktemp("xl")
    plan = _plan(root, "Lora3x3A50p-AdamW8", 25)
    ds = load_dataset(plan.io.dataset).datasets[0]
    pixels = torch.stack([load_pixels(ds.images[0], ds.subsets[0], np.random.default_rng(0))] * 4)
    captions, sizes = [ds.images[0].caption] * 4, [(64, 64, False)] * 4
    timesteps = torch.tensor([150, 400, 650, 900])

    def eval_loss(comps) -> float:
        with torch.no_grad():
            return float(denoise_loss(comps, pixels, captions, torch.ones(4), torch.Generator().manual_seed(0),
                                      recipe=plan.recipe, device=torch.device("cpu"), timesteps=timesteps, sizes=sizes))

    comps = build_tiny_sdxl()
    before = eval_loss(comps)
    result = train(plan, components=comps)
    ours = copy.deepcopy(build_tiny_sdxl())
    from charframe.generation.face_lora import apply_lora

    apply_lora(ours.unet, ours.text_encoders, result.output, 1.0)
    return dict(plan=plan, result=result, before=before, after=eval_loss(ours), root=root)


def test_sdxl_training_lowers_the_loss(trained) -> None:
    assert trained["after"] < trained["before"] - 0.02, (trained["before"], trained["after"])


def test_sdxl_file_has_sd_scripts_unet_keys_and_sdxl_metadata(trained) -> None:
    tensors, md = load_lora_file(trained["result"].output)
    unet = build_tiny_sdxl().unet
    expected = {k for k, _, _ in kohya_targets(unet, None, conv=True)}
    assert {k.split(".")[0] for k in tensors} == expected  # UNet only, sd-scripts' original-layout names
    assert all(k.startswith("lora_unet_") for k in expected) and "lora_unet_middle_block_1_proj_in" in expected
    assert "lora_unet_input_blocks_3_0_op" in expected and "lora_unet_output_blocks_2_2_conv" in expected
    assert md["ss_base_model_version"] == "sdxl_base_v1-0"
    assert md["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert md["ss_clip_skip"] == "None" and "modelspec.encoder_layer" not in md
    assert md["modelspec.prediction_type"] == "epsilon" and md["ss_zero_terminal_snr"] == "False"
    assert read_network(trained["result"].output).family == "sdxl"


def test_sdxl_file_loads_in_diffusers_sdxl_pipeline(trained) -> None:
    import peft  # noqa: F401

    path = trained["result"].output
    pipe = build_tiny_sdxl().pipeline()
    pipe.load_lora_weights(str(path), adapter_name="cf")
    injected = sum(1 for m in pipe.unet.modules() if "cf" in getattr(m, "lora_A", {}))
    assert injected == len(read_network(path).modules)


def test_text_encoders_train_when_asked_and_v_prediction_runs(tmp_path) -> None:
    plan = _plan(tmp_path, "Lora1x1A50p-AdamW8", 2, train_text_encoder=True, min_snr_gamma=5)
    result = train(plan, components=build_tiny_sdxl(prediction_type="v_prediction"))
    tensors, md = load_lora_file(result.output)
    prefixes = {k.split("_text_model")[0] for k in tensors if k.startswith("lora_te")}
    assert prefixes == {"lora_te1", "lora_te2"}
    assert all(np.isfinite(result.losses))
    assert (md["modelspec.prediction_type"], md["ss_zero_terminal_snr"], md["ss_min_snr_gamma"]) == ("v", "True", "5.0")


def test_long_captions_are_refused_for_sdxl(tmp_path) -> None:
    plan = _plan(tmp_path, "Lora1x1A50p-AdamW8", 1, max_token_length=150)
    with pytest.raises(CharframeError, match="max_token_length 150 is not yet supported for SDXL training"):
        train(plan, components=build_tiny_sdxl())
