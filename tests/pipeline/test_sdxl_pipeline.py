"""The pipeline face → body → group on the tiny SDXL model, by the real steps: SDXL's generation (bucket sizes, the
face LoRA on the body set), the family's dataset bucketing and recipes where the character file is silent, SDXL
LoRAs in sd-scripts' layout (UNet only), merge, compression and previews."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from charframe.lora.io import load_lora_file
from charframe.pipeline.preview import preview_title
from charframe.pipeline.preview_spec import preview_settings
from charframe.pipeline.runner import Options, run_target
from charframe.pipeline.score_file import read_score, score_path
from charframe.pipeline.stages import target_jobs
from charframe.testing import tiny_ccip
from charframe.util import toml as tomlio
from project_builder import templated_project
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

KEEP = ("f00", "b02")
EXCLUDE = [f"{k}{e}{a}" for k in "fb" for e in range(3) for a in range(5) if f"{k}{e}{a}" not in KEEP]


def character(kw: str) -> str:
    # the face stage names only its steps: its logic and dim come from SDXL's [defaults] (Lora1x1A50p, dim 32)
    return (f'keyword = "{kw}"\nclass = "girl"\nprompt = "1girl, {kw}"\nfill = "black"\n[outfits]\nsf = "kimono"\n'
            'kps = "maid"\n'
            '[generation]\nfamily = "sdxl"\nsize = 64\nsteps = 1\nhires_scale = 1.0\ncandidates = 1\n'
            f'[export]\nsizes = [64]\nexclude = {EXCLUDE!r}\n'.replace("'", '"')
            + '[training.face]\nsteps = 2\nsave_every = 1\n'
            + "".join(f'[training.{s}]\nlogic = "Lora1x1A1-AdamW8"\ndim = 2\nsteps = 2\n' for s in ("body", "group")))


def test_face_body_group_on_sdxl(tmp_path: Path, one_thread) -> None:
    root = templated_project(tmp_path / "proj")
    tiny_ccip.write_folder(root / "models" / "ccip", "histogram", 9.0)  # scores every checkpoint, rejects nothing
    with open(root / "charframe.toml", "a", encoding="utf-8") as f:
        f.write('[identity]\nmodel = "models/ccip"\n')
    (root / "Characters" / "krnk.toml").write_text(character("krnk"))
    group = root / "Characters" / "pair.group.toml"  # one character in two outfits: face, 2 bodies, the group
    group.write_text('[[member]]\ncharacter = "krnk"\noutfit = "sf"\n[[member]]\ncharacter = "krnk"\noutfit = "kps"\n')

    jobs = target_jobs(group)
    assert {j.family for j in jobs} == {"sdxl"}
    face = next(j for j in jobs if j.name == "face" and j.owner == "krnk")
    assert (face.plan.logic, face.plan.network.dim, face.plan.recipe.steps) == ("Lora1x1A50p-AdamW8", 32, 2)
    _, report = run_target(group, Options(progress=False))
    assert not report.failed, report.failed

    raw = root / "LoRAWork" / "krnk"
    with Image.open(raw / "face" / "raw" / "f00-0.png") as f, Image.open(raw / "body-sf" / "raw" / "b02-0.png") as b:
        assert f.size == (64, 64) and b.size == (48, 88)  # SDXL's 1024² and 704×1408 buckets at size 64
        assert "<lora:krnk-Lora1x1A50p-AdamW8-32-100-2-FACE-SvR16:0.8>" in b.info["parameters"]
    toml = tomlio.load(root / "LoRAInput" / "4_krnk" / "4_krnk.toml")
    assert toml["general"]["max_bucket_reso"] == 2048 and toml["general"]["bucket_reso_steps"] == 64
    for job in jobs:
        for path in (job.lora, job.merged, job.compressed, job.preview):
            assert path.is_file(), path
    tensors, metadata = load_lora_file(face.lora)
    assert metadata["ss_base_model_version"].startswith("sdxl_")
    prefixes = {k.split(".")[0].split("_")[1] for k in tensors}
    assert prefixes == {"unet"}  # UNet only: SDXL's default
    assert any(k.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") for k in tensors)
    assert Path(group_lora := next(j for j in jobs if j.stage == "group").lora).name.startswith("krnksf_krnkkps-")
    assert group_lora.is_file()
    score = read_score(score_path(face))  # both checkpoints drawn by the SDXL model with their LoRA, and scored
    assert [s.step for s in score.steps] == [1, 2] and all(s.identity is not None for s in score.steps)
    grid = face.lora.parent / score.steps[0].grid
    assert grid.is_file() and len(list((grid.parent / "step00000001").glob("*.png"))) == 4  # 1 scene + 3 codes
    title = preview_title(face, [], preview_settings(root, True, "sdxl"), ["krnk, in a forest"])
    assert "base model: charframe's tiny random demo model (noise pictures)" in title[2]
    assert "clip skip" not in " ".join(title)  # SDXL has none to state
