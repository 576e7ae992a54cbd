"""Code → prompt rules (CONVENTIONS §9), WebUI parameters text round trip, and the benchmark's
--gpu path importing nothing beyond torch/diffusers/transformers/safetensors/numpy/pillow/charframe."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from charframe.character import Character
from charframe.dataset.naming import ImageCode
from charframe.generation.code_prompt import background_fill, code_prompt
from charframe.generation.pnginfo import controlnet_field, parameters_text, parse_parameters, read_parameters, write_png

REPO = Path(__file__).resolve().parents[2]
CH = Character(keyword="krnk", prompt="1girl, solo, cat ears", fill="black", outfits={"sf": "sailor uniform"})


@pytest.mark.parametrize("code,expected", [
    ("f00", "1girl, solo, cat ears, (black background:1.3), simple background, upper body, (nude:1.4)"),
    ("f24", "1girl, solo, cat ears, (black background:1.3), simple background, upper body, (nude:1.4), "
            "(from below:1.3), (from behind:1.3), looking away"),
    ("f16", "1girl, solo, cat ears, (black background:1.3), simple background, upper body, (nude:1.4), "
            "(from above:1.3), from side, looking away"),
    ("b01", "1girl, solo, cat ears, sailor uniform, (black background:1.3), simple background, full body, looking away"),
])
def test_code_prompts(code: str, expected: str) -> None:
    c = ImageCode(code[0], int(code[1]), int(code[2]))
    assert code_prompt(CH, c, "sf" if code[0] == "b" else "") == expected


def test_auto_fill_from_hair_words() -> None:
    assert background_fill(replace(CH, fill="auto", prompt="1girl, white hair")) == "white"
    assert background_fill(replace(CH, fill="auto", prompt="1girl, black hair")) == "black"
    assert "(white background:1.3)" in code_prompt(replace(CH, fill="white"), ImageCode("f", 0, 0))


def test_parameters_round_trip(tmp_path: Path) -> None:
    cn = controlnet_field("none", "control_v11p_sd15_softedge [a8575a2a]", 0.5, 0.0, 0.3)
    text = parameters_text("a, (b:1.3)", "lowres, text", {"Steps": 28, "Sampler": "DPM++ 2M", "Schedule type": "Karras",
                                                           "CFG scale": 10.0, "Seed": 1234, "Size": "512x512",
                                                           "ControlNet 0": cn, "VAE": ""})
    assert text == ('a, (b:1.3)\nNegative prompt: lowres, text\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, '
                    'CFG scale: 10, Seed: 1234, Size: 512x512, ControlNet 0: "Module: none, Model: '
                    'control_v11p_sd15_softedge [a8575a2a], Weight: 0.5, Resize Mode: Crop and Resize, Processor Res: -1, '
                    'Threshold A: -1, Threshold B: -1, Guidance Start: 0.0, Guidance End: 0.3, Pixel Perfect: False, '
                    'Control Mode: Balanced"')
    write_png(tmp_path / "x.png", Image.new("RGB", (8, 8)), text)
    with Image.open(tmp_path / "x.png") as im:
        assert im.text["parameters"] == text  # PIL reads the tEXt chunk WebUI's PNG Info reads
    prompt, negative, fields = parse_parameters(read_parameters(tmp_path / "x.png"))
    assert (prompt, negative, fields["Seed"], fields["ControlNet 0"]) == ("a, (b:1.3)", "lowres, text", "1234", cn)


def test_benchmark_gpu_path_imports() -> None:
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import generate as g; "
        "import charframe.generation.passes, charframe.generation.prompt, charframe.generation.pnginfo, "
        "charframe.models.controlnet, charframe.models.tokenizer, charframe.models.single_file, "
        "charframe.generation.generate; "
        "bad = [m for m in ('lycoris', 'controlnet_aux', 'cv2', 'rembg', 'onnxruntime', 'bitsandbytes') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
