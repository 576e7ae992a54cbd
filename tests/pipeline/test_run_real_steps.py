"""`charframe run` through face → body → group with the REAL generate → clean → pick → export steps on the tiny
random SD model and ControlNet (test_run.py exercises staleness with small stand-ins; this one runs the method)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from charframe.cleaning.pick import read_selection
from charframe.generation.pnginfo import read_parameters
from charframe.lora.io import load_lora_file
from charframe.pipeline.runner import Options, rerun, run_target
from charframe.pipeline.steps import STEPS
from charframe.util import toml as tomlio
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

REPO = Path(__file__).resolve().parents[2]
RECIPE = 'logic = "Lora1x1A1-AdamW8"\ndim = 2\nlr = 100\nsteps = 1\n'
GENERATION = 'size = 128\nsteps = 2\ncandidates = 1\nhires_scale = 1.0\nsampler = "Euler a"\n'
ALL = [s.name for s in STEPS]  # generate … train, score, merge, compress, preview


def _character(kw: str, outfit: str, prompt: str) -> str:
    stages = "".join(f"[training.{s}]\n{RECIPE}" + ('preset = "BODY"\n' if s != "face" else "") for s in ("face", "body", "group"))
    return (f'keyword = "{kw}"\nclass = "girl"\nprompt = "1girl, {kw}"\nfill = "black"\n[outfits]\n{outfit} = "{prompt}"\n'
            f'[generation]\n{GENERATION}[export]\nsizes = [128, 256]\n{stages}')


def test_full_run_with_real_generation_on_tiny_models(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "proj"
    (root / "Characters").mkdir(parents=True)
    (root / "LoRAInput").mkdir()
    for folder in ("FaceTemplate", "BodyTemplate"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "charframe.toml").write_text('[preview]\nscenes = ["in a forest"]\nseeds = [1]\ntiny_size = 32\ntiny_steps = 1\n')
    (root / "Characters" / "krnk.toml").write_text(_character("krnk", "sf", "sailor uniform"))
    (root / "Characters" / "tyank.toml").write_text(_character("tyank", "kps", "kimono"))
    (root / "Characters" / "pair.group.toml").write_text(
        '[[member]]\ncharacter = "krnk"\noutfit = "sf"\n[[member]]\ncharacter = "tyank"\noutfit = "kps"\n')

    _, report = run_target(root / "Characters" / "pair.group.toml", Options(progress=False), STEPS)
    assert not report.failed, [(r.stage, r.step, r.message) for r in report.failed]
    ran = [(r.stage, r.step) for r in report.results if r.status == "ran"]
    assert ran == ([("face", s) for s in ALL] + [("body-sf", s) for s in ALL] + [("face", s) for s in ALL]
                   + [("body-kps", s) for s in ALL] + [("group", s) for s in ["export"] + ALL[4:]])

    body = root / "LoRAWork" / "krnk" / "body-sf"
    raw = sorted(p.name for p in (body / "raw").glob("*.png"))
    assert len(raw) == 15 and raw[0] == "b00-0.png"  # 15 body codes × 1 candidate
    params = read_parameters(body / "raw" / "b12-0.png")
    assert "sailor uniform" in params and "full body" in params and "<lora:krnk-" in params  # the face LoRA, applied
    with Image.open(body / "raw" / "b12-0.png") as im:
        assert im.size == (128, 256)
    assert set(read_selection(body / "picks.toml")) == {n.split("-")[0] for n in raw}
    inp = root / "LoRAInput"
    assert sorted(p.name for p in (inp / "2_krnksf_krnk").iterdir() if p.is_dir()) == [
        "krnk girl_f0128", "krnksf girl_b0128", "krnksf girl_b0256"]  # face 256 > 128 px source: skipped
    group = inp / "1_krnksf_tyankkps_krnk_tyank"
    assert len([p for p in group.iterdir() if p.is_dir()]) == 6
    assert (group / "tyankkps girl_b0256" / "b03.txt").read_text().startswith("tyankkps, white background")
    out = root / "LoRAOutput"
    for name, preset in (("krnk", "FACE"), ("krnksf", "BODY"), ("tyankkps", "BODY"), ("krnksf_tyankkps", "BODY")):
        tensors, _ = load_lora_file(out / name / f"{name}-Lora1x1A1-AdamW8-2-100-1-{preset}-SvR16.safetensors")
        assert tensors
    assert (out / "krnksf_tyankkps" / "krnksf_tyankkps-group-preview.png").is_file()

    again = rerun([root / "Characters" / "pair.group.toml"], Options(progress=False), STEPS)
    assert not again.failed and [r for r in again.results if r.status == "ran"] == []
