"""The PNG info of a hires, 2-ControlNet, face-LoRA, negative-embedding body image read back by WebUI: the parameters text was parsed by
WebUI 1.10.1's own `parse_generation_parameters` and each `ControlNet N` value by sd-webui-controlnet's
`ControlNetUnit.parse` (run outside the repo; the parsed dicts are tests/data/webui_infotext.json), and every field
charframe writes comes back with its value."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from charframe.generation.face_lora import lora_short_hash
from charframe.generation.generate import generate_set
from charframe.generation.pnginfo import parse_parameters, read_parameters
from charframe.models.checkpoint import model_file_hashes
from charframe.models.controlnet import build_tiny_controlnet

from generation_helpers import make_project
from test_face_lora_hed import tiny_lora

RECORDED = json.loads((Path(__file__).parents[1] / "data" / "webui_infotext.json").read_text("utf-8"))
EXTRA = """\
hires_steps = 3
steps = 3
sampler = "DPM++ 2M"
"""
CONTROLNETS = """
[[generation.controlnet]]
map = "softedge"
model = "LoRAInput/control_a.safetensors"
weight = 0.6
end = 0.3
[[generation.controlnet]]
map = "depth"
model = "LoRAInput/control_b.safetensors"
weight = 0.45
start = 0.1
end = 0.5
"""


def webui_case(root: Path) -> tuple[str, dict]:
    """Make the recorded image: body set b02, hires ×1.5 (3 steps), two ControlNet files, the face LoRA, a prompt
    with editing, an embedding in the negative prompt. Returns its parameters text and what charframe meant to
    write."""
    ch = make_project(root, steps=3, hires=1.5, sampler="DPM++ 2M", extra="hires_steps = 3")
    path = ch.path
    (root / "embeddings").mkdir()
    emb = root / "embeddings" / "EasyNegative.safetensors"
    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(5))}, str(emb))
    negative = "EasyNegative, " + ch.negative
    text = f'negative = "{negative}"\n' + path.read_text("utf-8").replace('prompt = "1girl, solo, short black hair, cat ears"',
                                            'prompt = "1girl, solo, [short:long:0.5] black hair, cat ears"')
    start = text.index("[[generation.controlnet]]")
    path.write_text(text[:start] + CONTROLNETS, encoding="utf-8")
    for name, seed in (("control_a", 1), ("control_b", 2)):
        save_file({k: v.contiguous() for k, v in build_tiny_controlnet(seed).state_dict().items()},
                  str(root / "LoRAInput" / f"{name}.safetensors"))
    lora = tiny_lora(root / "LoRAOutput" / "krnk.safetensors")
    from charframe.character import load_character

    ch = load_character(path)
    res = generate_set(ch, "b", outfit="sf", codes=["b02"], candidates=1, face_lora=lora, progress=False, device="cpu")
    legacy = {n: model_file_hashes(root / "LoRAInput" / f"{n}.safetensors")[0] for n in ("control_a", "control_b")}
    meant = {
        "Steps": "3", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "7",
        "Size-1": "64", "Size-2": "128", "Model": "charframe-tiny-sd15", "Clip skip": "2", "RNG": "CPU",
        "Denoising strength": "0.5", "Hires upscale": "1.5", "Hires steps": "3", "Hires upscaler": "Lanczos",
        "Lora hashes": f"krnk: {lora_short_hash(lora)}",
        "TI hashes": f"EasyNegative: {hashlib.sha256(emb.read_bytes()).hexdigest()[:12]}",
        "ControlNet 0": {"module": "none", "model": f"control_a [{legacy['control_a']}]", "weight": 0.6,
                         "resize_mode": "Crop and Resize", "processor_res": -1, "threshold_a": -1, "threshold_b": -1,
                         "guidance_start": 0.0, "guidance_end": 0.3, "pixel_perfect": False,
                         "control_mode": "Balanced"},
        "ControlNet 1": {"module": "none", "model": f"control_b [{legacy['control_b']}]", "weight": 0.45,
                         "resize_mode": "Crop and Resize", "processor_res": -1, "threshold_a": -1, "threshold_b": -1,
                         "guidance_start": 0.1, "guidance_end": 0.5, "pixel_perfect": False,
                         "control_mode": "Balanced"},
    }
    return read_parameters(res.written[0]), meant


def _without_version(text: str) -> str:
    return text.rsplit(", Version: ", 1)[0]


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[str, dict]:
    return webui_case(tmp_path_factory.mktemp("infotext"))


def test_recorded_text_is_what_charframe_writes(case) -> None:
    text, _ = case
    assert _without_version(text) == _without_version(RECORDED["text"])
    assert "<lora:krnk:0.8>" in text.split("\n")[0] and "[short:long:0.5]" in text.split("\n")[0]


def test_webui_reads_every_field_back(case) -> None:
    _, meant = case
    parsed = RECORDED["webui"]
    for key, value in meant.items():
        if key.startswith("ControlNet"):
            assert RECORDED["controlnet_units"][key] == value, key  # the extension's unit parser
        else:
            assert parsed[key] == value, key
    assert parsed["Prompt"] == RECORDED["text"].split("\nNegative prompt: ")[0]
    assert parsed["Negative prompt"].startswith("EasyNegative, lowres, bad anatomy")
    assert RECORDED["resize_modes"].count("Crop and Resize") == 1 and "Balanced" in RECORDED["control_modes"]
    assert "none" in RECORDED["modules"] and "softedge_hed" in RECORDED["modules"]


def test_charframe_reads_what_webui_reads(case) -> None:
    text, _ = case
    prompt, negative, fields = parse_parameters(RECORDED["text"])
    parsed = RECORDED["webui"]
    assert (prompt, negative) == (parsed["Prompt"], parsed["Negative prompt"])
    for key, value in fields.items():
        if key == "Size":
            assert value.split("x") == [parsed["Size-1"], parsed["Size-2"]]
        else:
            assert parsed[key] == value, key
