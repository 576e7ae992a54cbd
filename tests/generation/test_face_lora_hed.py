"""The face LoRA changes the body set's output (weight 0 = no LoRA), and `hed` runs controlnet-aux's real HED
network (random weights, tiny input) on the template picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from charframe.dataset.naming import ImageCode
from charframe.errors import CharframeError
from charframe.generation.control import control_image, hed_detector
from charframe.generation.face_lora import apply_lora, lora_applied
from charframe.generation.generate import generate_set
from charframe.lora.io import save_lora_file
from charframe.models.tiny import build_tiny_sd
from charframe.testing.synthetic_lora import kohya_targets, random_network
from generation_helpers import make_project


def tiny_lora(path: Path, kind: str = "lora") -> Path:
    sd = build_tiny_sd(0)
    state = random_network(kohya_targets(sd.unet, sd.text_encoder), rank=4, kind=kind, seed=1)
    save_lora_file(path, {k: v * 3 for k, v in state.items()} if kind == "lora" else state, {})
    return path


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_merge_matches_the_delta(tmp_path: Path, kind: str) -> None:
    from charframe.lora.functional import module_delta
    from charframe.lora.io import read_network

    path = tiny_lora(tmp_path / f"{kind}.safetensors", kind)
    sd = build_tiny_sd(0)
    layer = sd.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    before = layer.weight.detach().clone()
    n = apply_lora(sd.unet, sd.text_encoder, path, 0.5)
    net = read_network(path)
    delta = module_delta(kind, net.modules["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"].tensors)
    assert n == len(net.modules)
    torch.testing.assert_close(layer.weight, before + 0.5 * delta.reshape(before.shape))


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_lora_applied_puts_back_the_exact_weights(tmp_path: Path, kind: str) -> None:
    """The preview grid tries several LoRAs in turn on one loaded model: each is merged for its row and the
    model's weights are bit-identical afterwards, also when drawing fails inside the block."""
    path = tiny_lora(tmp_path / f"{kind}.safetensors", kind)
    sd = build_tiny_sd(0)
    models = {"unet": sd.unet, "te": sd.text_encoder}
    before = {f"{m}.{k}": v.detach().clone() for m, mod in models.items() for k, v in mod.state_dict().items()}
    layer = sd.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    merged_copy = build_tiny_sd(0)
    apply_lora(merged_copy.unet, merged_copy.text_encoder, path, 1.0)
    expected = merged_copy.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    with lora_applied(sd.unet, sd.text_encoder, path) as n:
        assert n > 0
        assert torch.equal(layer.weight, expected)
    with pytest.raises(RuntimeError, match="drawing failed"):
        with lora_applied(sd.unet, sd.text_encoder, path):
            raise RuntimeError("drawing failed")
    after = {f"{m}.{k}": v for m, mod in models.items() for k, v in mod.state_dict().items()}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_body_set_with_face_lora(tmp_path: Path) -> None:
    ch = make_project(tmp_path)
    lora = tiny_lora(tmp_path / "LoRAOutput" / "krnk.safetensors")
    raw = tmp_path / "LoRAWork" / "krnk" / "body-sf" / "raw"

    def run(**kw) -> np.ndarray:
        res = generate_set(ch, "b", outfit="sf", codes=["b02"], candidates=1, progress=False, device="cpu", **kw)
        with Image.open(res.written[0]) as im:
            px = np.asarray(im.convert("RGB"))
        text = im.info["parameters"]
        res.written[0].unlink()
        return px, text

    plain, _ = run()
    with_lora, text = run(face_lora=lora)
    assert "<lora:krnk:0.8>" in text.split("\n")[0]
    assert not np.array_equal(plain, with_lora)
    from dataclasses import replace

    ch = replace(ch, generation=replace(ch.generation, face_lora_weight=0.0))
    zero, _ = run(face_lora=lora)
    assert np.array_equal(plain, zero)


def test_wrong_face_lora(tmp_path: Path) -> None:
    sd = build_tiny_sd(0)
    with pytest.raises(CharframeError, match="not found"):
        apply_lora(sd.unet, sd.text_encoder, tmp_path / "nope.safetensors", 1.0)
    save_lora_file(tmp_path / "xl.safetensors", {"lora_unet_label_emb_0_0.lora_down.weight": torch.zeros(2, 4),
                                                 "lora_unet_label_emb_0_0.lora_up.weight": torch.zeros(4, 2)}, {})
    with pytest.raises(CharframeError, match="none of its modules fit"):
        apply_lora(sd.unet, sd.text_encoder, tmp_path / "xl.safetensors", 1.0)


def test_hed_runs_the_real_network_on_the_template_picture(tmp_path: Path) -> None:
    make_project(tmp_path)
    hed = hed_detector(None, seed=0)
    img = control_image(tmp_path / "FaceTemplate", ImageCode("f", 1, 2), "hed", 64, hed)
    assert img.size == (64, 64) and img.mode == "RGB"
    again = control_image(tmp_path / "FaceTemplate", ImageCode("f", 1, 2), "hed", 64, hed_detector(None, seed=0))
    assert np.array_equal(np.asarray(img), np.asarray(again))
    # by hand: controlnet-aux's network on the picture, side outputs resized bilinearly, sigmoid of their mean
    with Image.open(tmp_path / "FaceTemplate" / "f12.png") as im:
        pic = np.asarray(im.convert("RGB")).astype(np.float32)
    with torch.no_grad():
        outs = hed.netNetwork(torch.from_numpy(pic).permute(2, 0, 1)[None])
        ups = [torch.nn.functional.interpolate(o, size=(64, 64), mode="bilinear", align_corners=False) for o in outs]
        edge = torch.sigmoid(torch.stack(ups).mean(0))[0, 0].double().numpy()
    expected = (edge * 255.0).clip(0, 255).astype(np.uint8)
    got = np.asarray(img)
    assert np.array_equal(got[..., 0], got[..., 2]) and expected.std() > 0
    assert np.abs(got[..., 0].astype(int) - expected).max() <= 1


def test_hed_weights_file(tmp_path: Path) -> None:
    from controlnet_aux.hed import ControlNetHED_Apache2

    torch.manual_seed(3)
    net = ControlNetHED_Apache2()
    torch.save(net.state_dict(), tmp_path / "ControlNetHED.pth")
    hed = hed_detector(tmp_path / "ControlNetHED.pth")
    assert all(torch.equal(a, b) for a, b in zip(hed.netNetwork.state_dict().values(), net.state_dict().values()))
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CharframeError, match="not controlnet-aux's HED weights"):
        hed_detector(tmp_path / "bad.pth")
