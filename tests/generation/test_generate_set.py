"""generate_set on the tiny model: files in the layout contract, PNG parameters, determinism, rerun fills gaps,
hires pass, multi-ControlNet, mirrored azimuths, and bad input refused before any image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.errors import CharframeError
from charframe.generation.generate import generate_set
from charframe.generation.pnginfo import parse_parameters, read_parameters
from generation_helpers import make_project


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_face_set_layout_parameters_and_rerun(tmp_path: Path) -> None:
    ch = make_project(tmp_path)
    res = generate_set(ch, "face", codes=["f12", "f00"], progress=False, device="cpu")
    raw = tmp_path / "LoRAWork" / "krnk" / "face" / "raw"
    assert sorted(p.name for p in res.written) == ["f00-0.png", "f00-1.png", "f12-0.png", "f12-1.png"]
    assert all(p.parent == raw for p in res.written) and res.skipped == []
    assert res.contact == tmp_path / "LoRAWork" / "krnk" / "face" / "contact.png" and res.contact.is_file()
    with Image.open(raw / "f12-1.png") as im:
        assert im.size == (64, 64)
    prompt, negative, fields = parse_parameters(read_parameters(raw / "f12-1.png"))
    assert prompt == ("1girl, solo, short black hair, cat ears, (black background:1.3), simple background, "
                      "upper body, (nude:1.4), (from above:1.3), from side, looking away")
    assert negative == ch.negative
    assert fields["Seed"] == "8" and fields["Steps"] == "2" and fields["Sampler"] == "Euler a"
    assert fields["CFG scale"] == "7" and fields["Size"] == "64x64" and fields["Clip skip"] == "2"
    assert fields["Model"] == "charframe-tiny-sd15"
    assert fields["Schedule type"] == "Automatic" and fields["RNG"] == "CPU" and "Pad conds" not in fields
    assert fields["ControlNet 0"] == ("Module: none, Model: charframe-tiny-controlnet, Weight: 0.8, Resize Mode: Crop and "
                                      "Resize, Processor Res: -1, Threshold A: -1, Threshold B: -1, Guidance Start: 0.0, "
                                      "Guidance End: 0.6, Pixel Perfect: False, Control Mode: Balanced")
    assert parse_parameters(read_parameters(raw / "f00-0.png"))[2]["Seed"] == "7"
    # same seed, same settings, same device → identical pixels; the rerun makes only what is missing
    before = pixels(raw / "f12-1.png")
    (raw / "f12-1.png").unlink()
    again = generate_set(ch, "f", codes=["f12", "f00"], progress=False, device="cpu")
    assert [p.name for p in again.written] == ["f12-1.png"] and len(again.skipped) == 3
    assert np.array_equal(before, pixels(raw / "f12-1.png"))
    assert not np.array_equal(pixels(raw / "f12-0.png"), before)  # another seed, another picture
    none = generate_set(ch, "f", codes=["f12", "f00"], progress=False, device="cpu")
    assert none.written == [] and len(none.skipped) == 4


def test_control_image_and_weight_steer_the_result(tmp_path: Path) -> None:
    ch = make_project(tmp_path)
    a = generate_set(ch, "f", codes=["f12"], candidates=1, progress=False, device="cpu").written[0]
    img_a = pixels(a)
    a.unlink()
    b = generate_set(ch, "f", codes=["f12"], candidates=1, control="depth", progress=False, device="cpu").written[0]
    assert not np.array_equal(img_a, pixels(b))  # other control map → other picture


def test_body_set_hires_and_multi_controlnet(tmp_path: Path) -> None:
    extra = ""
    ch = make_project(tmp_path, hires=1.5, extra=extra)
    text = ch.path.read_text() + '[[generation.controlnet]]\nmap = "depth"\nweight = 0.4\nend = 1.0\n'
    ch.path.write_text(text)
    from charframe.character import load_character

    ch = load_character(ch.path)
    res = generate_set(ch, "b", outfit="sf", codes=["b02"], candidates=1, progress=False, device="cpu")
    path = res.written[0]
    assert path == tmp_path / "LoRAWork" / "krnk" / "body-sf" / "raw" / "b02-0.png"
    with Image.open(path) as im:
        assert im.size == (96, 192)  # 64x128 first pass, ×1.5
    prompt, _, fields = parse_parameters(read_parameters(path))
    assert "sailor uniform" in prompt and "full body" in prompt and "nude" not in prompt
    assert fields["Size"] == "64x128" and fields["Hires upscale"] == "1.5" and fields["Denoising strength"] == "0.5"
    assert fields["ControlNet 1"].startswith("Module: none,") and "Weight: 0.4," in fields["ControlNet 1"]


def test_mirrored_azimuths_for_asymmetric_characters(tmp_path: Path) -> None:
    from charframe.dataset.naming import ImageCode
    from charframe.generation.control import control_image

    ch = make_project(tmp_path, asymmetric=True)
    face = tmp_path / "FaceTemplate"
    img13 = np.asarray(control_image(face, ImageCode("f", 1, 3), "softedge", 64))
    img15 = np.asarray(control_image(face, ImageCode("f", 1, 5), "softedge", 64))
    assert np.array_equal(img15, img13[:, ::-1])
    n13 = np.asarray(control_image(face, ImageCode("f", 1, 3), "normal", 64)).astype(int)
    n15 = np.asarray(control_image(face, ImageCode("f", 1, 5), "normal", 64)).astype(int)
    assert np.array_equal(n15[..., 0], 255 - n13[:, ::-1, 0]) and np.array_equal(n15[..., 1], n13[:, ::-1, 1])
    res = generate_set(ch, "f", codes=["f15"], candidates=1, progress=False, device="cpu")
    assert "(from behind:1.3)" in parse_parameters(read_parameters(res.written[0]))[0]


@pytest.mark.parametrize("case,message", [
    ("sampler", "unknown sampler 'Turbo 9000'"),
    ("no_map", "no canny control map"),
    ("controlnet_is_lora", "LoRA"),
    ("bad_code", "is not a face-set code"),
    ("outfit", "no outfit 'xx'"),
    ("map_name", "unknown control map 'sketch'"),
])
def test_bad_input_is_refused_before_any_image(tmp_path: Path, case: str, message: str) -> None:
    from safetensors.torch import save_file
    import torch

    sampler = "Turbo 9000" if case == "sampler" else "Euler a"
    ch = make_project(tmp_path, sampler=sampler)
    kwargs: dict = dict(codes=["f12"], progress=False, device="cpu")
    kind = "f"
    if case == "no_map":
        kwargs["control"] = "canny"
    elif case == "controlnet_is_lora":
        lora = tmp_path / "LoRAInput" / "face.safetensors"
        save_file({"lora_unet_conv_in.lora_down.weight": torch.zeros(2, 4, 3, 3)}, str(lora))
        ch.path.write_text(ch.path.read_text().replace('map = "softedge"', 'map = "softedge"\nmodel = "LoRAInput/face.safetensors"'))
        from charframe.character import load_character

        ch = load_character(ch.path)
    elif case == "bad_code":
        kwargs["codes"] = ["b12"]
    elif case == "outfit":
        kind, kwargs["outfit"], kwargs["codes"] = "b", "xx", ["b02"]
    elif case == "map_name":
        kwargs["control"] = "sketch"
    with pytest.raises(CharframeError, match=message):
        generate_set(ch, kind, **kwargs)
    assert not (tmp_path / "LoRAWork" / "krnk" / "face" / "raw").exists()


def test_interrupt_keeps_finished_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from charframe.generation import passes as runner

    ch = make_project(tmp_path)
    real = runner.Runner.image
    calls = []

    def flaky(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(runner.Runner, "image", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_set(ch, "f", codes=["f12", "f13"], progress=False, device="cpu")
    raw = tmp_path / "LoRAWork" / "krnk" / "face" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["f12-0.png", "f12-1.png"]  # no temp files left
    assert (raw.parent / "contact.png").is_file()
    monkeypatch.setattr(runner.Runner, "image", real)
    res = generate_set(ch, "f", codes=["f12", "f13"], progress=False, device="cpu")
    assert sorted(p.name for p in res.written) == ["f13-0.png", "f13-1.png"]
