"""Generation and the model family: SDXL sets on the tiny SDXL model (one and two ControlNets, union ControlNets,
hires, the face LoRA, PNG info read back), first-pass sizes from the family's buckets, the character's family
defaults, and one clear line for a model file, ControlNet or LoRA of the other family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import charframe.generation.generate as gen
from charframe.character import load_character
from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.generation.control import fit, output_size
from charframe.generation.families import first_pass_sizes
from charframe.generation.pnginfo import parse_parameters, read_parameters
from charframe.lora.io import save_lora_file
from charframe.models.controlnet import build_tiny_controlnet, build_tiny_union
from charframe.models.tiny import TINY_SDXL_UNET, build_tiny_sd, build_tiny_sdxl
from charframe.testing.synthetic_lora import kohya_targets, random_network
from charframe.testing.tiny_files import save_tiny_sdxl_single_file
from generation_helpers import make_project

UNION = "controlnet-union-sdxl-promax.safetensors"


def xl_project(root: Path, units: str = "", hires: float = 1.0, extra: str = "") -> object:
    """The generation test project with `family = "sdxl"` (the tiny SDXL model) and, when given, its own
    [[generation.controlnet]] tables instead of the default tiny one."""
    make_project(root, hires=hires, maps=("softedge", "depth", "normal", "mask"))
    path = root / "Characters" / "krnk.toml"
    text = path.read_text(encoding="utf-8")
    head, _, tail = text.partition("[[generation.controlnet]]")
    path.write_text(head + 'family = "sdxl"\n' + extra + (units or "[[generation.controlnet]]" + tail), encoding="utf-8")
    return load_character(path)


def save_union(path: Path, seed: int = 3) -> Path:
    model = build_tiny_union(seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def test_sdxl_set_with_one_controlnet(tmp_path: Path) -> None:
    """A face and a body set on the tiny SDXL model: drawn at the family's bucket nearest each template (face 1:1,
    body 1:2), WebUI's parameters chunk read back, the same seed giving the same pixels."""
    c = xl_project(tmp_path / "p")
    face = gen.generate_set(c, "face", codes=["f00"], progress=False)
    body = gen.generate_set(c, "body", outfit="sf", codes=["b02"], progress=False)
    assert [p.name for p in face.written] == ["f00-0.png", "f00-1.png"]
    with Image.open(face.written[0]) as a, Image.open(body.written[0]) as b:
        assert a.size == (64, 64) and b.size == (48, 88)  # SDXL's 1024² and 704×1408 at size 64
    prompt, negative, fields = parse_parameters(read_parameters(face.written[0]))
    assert prompt.startswith("1girl, solo") and negative.startswith("lowres")
    assert fields["Size"] == "64x64" and fields["Seed"] == "7" and fields["Model"] == "charframe-tiny-sdxl"
    assert fields["Sampler"] == "Euler a" and fields["ControlNet 0"].startswith("Module: none, Model: charframe-tiny-controlnet")
    assert not np.array_equal(pixels(face.written[0]), pixels(face.written[1]))  # seeds 7 and 8
    again = gen.generate_set(c, "face", codes=["f00"], candidates=1, progress=False)
    assert again.skipped == [face.written[0]]
    (face.written[0]).unlink()
    redo = gen.generate_set(c, "face", codes=["f00"], candidates=1, progress=False)
    assert redo.written == [face.written[0]]


def test_sdxl_two_union_units_with_hires(tmp_path: Path, monkeypatch) -> None:
    """Two units on one union ControlNet file (loaded once): each runs with its own control type (softedge → 2,
    depth → 1, as xinsir numbers them), the hires pass draws at 1.5×, the PNG names both units."""
    root = tmp_path / "p"
    root.mkdir()
    save_union(root / UNION)
    units = (f'[[generation.controlnet]]\nmap = "softedge"\nmodel = "{UNION}"\nweight = 0.6\nend = 1.0\n'
             f'[[generation.controlnet]]\nmap = "depth"\nmodel = "{UNION}"\nweight = 0.4\nend = 0.5\n')
    c = xl_project(root, units, hires=1.5)
    loads, modes = [], []
    real_load = gen.load_controlnet
    monkeypatch.setattr(gen, "load_controlnet", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    from diffusers import ControlNetUnionModel

    real_forward = ControlNetUnionModel.forward
    monkeypatch.setattr(ControlNetUnionModel, "forward",
                        lambda self, *a, **k: modes.append(k["control_type_idx"]) or real_forward(self, *a, **k))
    result = gen.generate_set(c, "face", codes=["f00"], candidates=1, progress=False)
    assert loads == [root / UNION]
    assert {tuple(m) for m in modes} == {(2,), (1,)}
    with Image.open(result.written[0]) as im:
        assert im.size == (96, 96)
    fields = parse_parameters(read_parameters(result.written[0]))[2]
    assert fields["Hires upscale"] == "1.5" and "controlnet-union-sdxl-promax [" in fields["ControlNet 1"]
    assert "Weight: 0.4" in fields["ControlNet 1"] and "Guidance End: 0.5" in fields["ControlNet 1"]


def test_sdxl_union_refusals(tmp_path: Path) -> None:
    """A union unit without a control type for its map, and a union beside a single-type ControlNet: one line
    naming the file and the fix, before any image."""
    root = tmp_path / "p"
    root.mkdir()
    save_union(root / UNION)
    mask = xl_project(root, f'[[generation.controlnet]]\nmap = "mask"\nmodel = "{UNION}"\n')
    with pytest.raises(CharframeError, match=rf"{UNION}: a union ControlNet has no control type for the 'mask' map"):
        gen.generate_set(mask, "face", codes=["f00"], progress=False)
    mixed = xl_project(root, f'[[generation.controlnet]]\nmodel = "{UNION}"\n[[generation.controlnet]]\nmap = "depth"\n')
    with pytest.raises(CharframeError, match=r"generation.controlnet 2: a single-type ControlNet beside the union"):
        gen.generate_set(mixed, "face", codes=["f00"], progress=False)


def sdxl_lora(path: Path, seed: int = 1) -> Path:
    xl = build_tiny_sdxl(0)
    state = random_network(kohya_targets(xl.unet, [xl.text_encoder, xl.text_encoder_2]), rank=4, seed=seed)
    save_lora_file(path, {k: v * 3 for k, v in state.items()}, {})
    return path


def test_sdxl_face_lora_changes_the_body_set(tmp_path: Path) -> None:
    """The face LoRA (UNet and both text encoders' modules) is merged for the body set; weight 0 draws what no
    LoRA draws, and the prompt in the PNG carries its tag."""
    lora = sdxl_lora(tmp_path / "krnk-face.safetensors")
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        assert {k.split("_")[1] for k in f.keys()} == {"unet", "te1", "te2"}
    runs = {}
    for name, weight, face in (("plain", 0.8, None), ("lora", 0.8, lora), ("zero", 0.0, lora)):
        c = xl_project(tmp_path / name, extra=f"face_lora_weight = {weight}\n")
        runs[name] = gen.generate_set(c, "body", outfit="sf", codes=["b02"], candidates=1, face_lora=face,
                                      progress=False).written[0]
    assert not np.array_equal(pixels(runs["plain"]), pixels(runs["lora"]))
    assert np.array_equal(pixels(runs["plain"]), pixels(runs["zero"]))
    assert parse_parameters(read_parameters(runs["lora"]))[0].endswith("<lora:krnk-face:0.8>")


def test_files_of_the_other_family_are_one_clear_line(tmp_path: Path) -> None:
    """An SD1.x ControlNet or LoRA with an SDXL model, and the reverse: refused naming the file and what it is."""
    sd15_cn = tmp_path / "control_v11p_sd15_softedge.safetensors"
    save_file({k: v.contiguous() for k, v in build_tiny_controlnet(0).state_dict().items()}, str(sd15_cn))
    xl_cn = tmp_path / "noob-sdxl-controlnet-softedge_hed.safetensors"
    save_file({k: v.contiguous() for k, v in build_tiny_controlnet(0, TINY_SDXL_UNET).state_dict().items()}, str(xl_cn))
    xl = xl_project(tmp_path / "xl", f'[[generation.controlnet]]\nmodel = "{sd15_cn}"\n')
    with pytest.raises(CharframeError, match=r"control_v11p_sd15_softedge.safetensors: looks like an SD1.x ControlNet"
                                             r".*it is an SDXL model\); pass an SDXL ControlNet"):
        gen.generate_set(xl, "face", codes=["f00"], progress=False)
    sd = make_project(tmp_path / "sd", extra="")
    path = sd.path.read_text().replace("[[generation.controlnet]]", f'[[generation.controlnet]]\nmodel = "{xl_cn}"')
    sd.path.write_text(path)
    with pytest.raises(CharframeError, match=r"noob-sdxl-controlnet-softedge_hed.safetensors: looks like an SDXL "
                                             r"ControlNet.*it is an SD1.x model\); pass an SD1.x ControlNet"):
        gen.generate_set(load_character(sd.path), "face", codes=["f00"], progress=False)
    sd15_lora = tmp_path / "sd15-face.safetensors"
    base = build_tiny_sd(0)
    save_lora_file(sd15_lora, random_network(kohya_targets(base.unet, base.text_encoder), rank=2), {})
    with pytest.raises(CharframeError, match=r"sd15-face.safetensors: .*SD1.x"):
        gen.generate_set(xl_project(tmp_path / "xl2"), "body", outfit="sf", codes=["b02"], face_lora=sd15_lora,
                         progress=False)
    with pytest.raises(CharframeError, match=r"krnk-face.safetensors: .*SDXL"):
        gen.generate_set(make_project(tmp_path / "sd2"), "body", outfit="sf", codes=["b02"],
                         face_lora=sdxl_lora(tmp_path / "krnk-face.safetensors"), progress=False)


def test_incomplete_or_non_base_sdxl_files_are_refused_by_name(tmp_path: Path) -> None:
    """A Pony/Illustrious file shared without its text encoders, an SDXL inpainting file: one line naming the
    file and what it is, before anything loads."""
    no_te = save_tiny_sdxl_single_file(tmp_path / "ponyDiffusionV6XL_unet.safetensors")
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(no_te)).items() if not k.startswith("conditioner.embedders.1.")}
    save_file(state, str(no_te))
    c = xl_project(tmp_path / "p", extra=f'model = "{no_te}"\n')
    with pytest.raises(CharframeError, match=r"ponyDiffusionV6XL_unet.safetensors: SDXL UNet found but no OpenCLIP "
                                             r"ViT-bigG text encoder weights"):
        gen.generate_set(c, "face", codes=["f00"], progress=False)
    inpaint = tmp_path / "illustrious-inpainting.safetensors"
    full = load_file(str(save_tiny_sdxl_single_file(tmp_path / "full.safetensors")))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    full[key] = torch.cat([full[key], full[key], full[key][:, :1]], dim=1)
    save_file(full, str(inpaint))
    c = xl_project(tmp_path / "q", extra=f'model = "{inpaint}"\n')
    with pytest.raises(CharframeError, match=r"illustrious-inpainting.safetensors: looks like an SDXL inpainting model"):
        gen.generate_set(c, "face", codes=["f00"], progress=False)


def test_noobai_names_warn_about_map_and_prediction(tmp_path: Path, caplog) -> None:
    """A NoobAI-XL ControlNet named for depth given softedge maps, and a `v-` one with an eps model: drawn, with a
    warning naming the file."""
    path = tmp_path / "p"
    path.mkdir()
    name = "v-depth_midas.safetensors"
    save_file({k: v.contiguous() for k, v in build_tiny_controlnet(0, TINY_SDXL_UNET).state_dict().items()},
              str(path / name))
    c = xl_project(path, f'[[generation.controlnet]]\nmap = "softedge"\nmodel = "{name}"\n')
    caplog.set_level("WARNING")
    assert gen.generate_set(c, "face", codes=["f00"], candidates=1, progress=False).written
    text = caplog.text
    assert f"{name}: a depth_midas ControlNet; the unit gives it softedge maps" in text
    assert f"{name}: made for v-prediction models, the base model is epsilon" in text


def test_family_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    """SDXL's [defaults] (1024 px, Euler a, CFG 6, exports at 1024, dim 32 recipes) apply where the character file
    is silent; what it sets is kept; SD1.x keeps CONVENTIONS' values."""
    root = tmp_path / "p"
    (root / "Characters").mkdir(parents=True)
    path = root / "Characters" / "krnk.toml"
    path.write_text('keyword = "krnk"\n[generation]\nfamily = "sdxl"\ncfg = 9\n[training.face]\nsteps = 300\n')
    c = load_character(path)
    xl = c.for_family(get_family("sdxl"))
    assert (xl.generation.size, xl.generation.sampler, xl.generation.cfg) == (1024, "Euler a", 9.0)
    assert xl.export.sizes == (1024,) and (xl.training.face.dim, xl.training.face.steps) == (32, 300)
    assert (xl.training.body.logic, xl.training.body.steps, xl.training.body.preset) == ("Lora1x1A50p-AdamW8", 1200, "BODY")
    assert xl.for_family(get_family("sdxl")) == xl
    assert c.for_family(get_family("sd15")) == c and c.generation.size == 512


def test_first_pass_sizes_follow_the_family_buckets() -> None:
    """SD1.x: the template's aspect at the shorter side; SDXL: the bucket of nearest aspect (1:1 → 1024², 1:2 →
    704×1408, 2:3 → 832×1216), scaled by size; a map of another aspect is fitted whole and padded."""
    xl = first_pass_sizes("sdxl", 1024)
    assert first_pass_sizes("sd15", 512) is None
    assert output_size((512, 1024), 512) == (512, 1024)
    assert output_size((1024, 1024), 1024, xl) == (1024, 1024)
    assert output_size((512, 1024), 1024, xl) == (704, 1408)
    assert output_size((832, 1216), 1024, xl) == (832, 1216) and output_size((1000, 660), 1024, xl) == (1216, 832)
    assert (704, 1408) in first_pass_sizes("sdxl", 1024) and first_pass_sizes("sdxl", 512)[0] == (512, 512)
    img = Image.new("RGB", (100, 100), (9, 9, 9))
    img.paste((255, 0, 0), (40, 40, 60, 60))
    out = fit(img, (100, 200), Image.NEAREST)
    arr = np.asarray(out)
    assert out.size == (100, 200) and tuple(arr[0, 0]) == (9, 9, 9) and tuple(arr[100, 50]) == (255, 0, 0)
    assert np.array_equal(np.asarray(fit(img, (50, 50), Image.NEAREST)), np.asarray(img.resize((50, 50), Image.NEAREST)))


def test_v_prediction_sdxl_set_runs_on_the_zero_terminal_snr_schedule(tmp_path: Path, monkeypatch) -> None:
    """A NoobAI-XL v-pred model (its diffusers folder's scheduler: v-prediction, zero terminal SNR; a single file
    says so with its `v_pred`/`ztsnr` keys): the runner converts v to noise on the
    zero-terminal-SNR schedule (last ᾱ WebUI's 4.9e-8, so the first sigma is finite) and draws a real picture (no
    NaN, not the eps file's); `prediction = "v_prediction"` in the character file alone makes v-pred on the plain
    schedule."""
    from charframe.generation.schedules import ZTSNR_LAST
    from charframe.generation.sdxl import SDXLRunner

    runners = []
    real_init = SDXLRunner.__init__
    monkeypatch.setattr(SDXLRunner, "__init__", lambda self, *a, **k: runners.append(self) or real_init(self, *a, **k))
    written = []
    from charframe.testing.tiny_files import save_tiny_sdxl

    for name, vpred, extra in (("e", False, ""), ("v", True, ""), ("o", False, 'prediction = "v_prediction"\n')):
        model = save_tiny_sdxl(tmp_path / f"noobai-{name}", prediction_type="v_prediction" if vpred else "epsilon")
        c = xl_project(tmp_path / name, extra=f'model = "{model}"\n' + extra)
        written.append(gen.generate_set(c, "face", codes=["f00"], candidates=1, progress=False).written[0])
    assert [r.v_pred for r in runners] == [False, True, True]
    last = [float(r.schedule.alphas_cumprod[-1]) for r in runners]
    assert last[1] == float(np.float32(ZTSNR_LAST)) and last[0] == last[2] > 1e-3
    assert np.isfinite(runners[1].schedule.sigma_max)
    eps, vp = pixels(written[0]), pixels(written[1])
    assert not np.array_equal(eps, vp) and vp.std() > 0
