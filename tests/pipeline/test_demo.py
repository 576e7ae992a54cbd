"""`charframe demo`: the README's main command does the whole flow on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.cleaning.pick import read_selection
from charframe.util import toml as tomlio
from charframe.cli import main
from charframe.pipeline.demo import EXAMPLE_NAME, EXAMPLE_SIZES, EXAMPLES_DIR, write_example_dataset
from charframe.lora.blocks import block_of
from charframe.lora.io import load_lora_file
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

REPO = Path(__file__).resolve().parents[2]


def test_committed_example_dataset_is_made_from_the_templates(tmp_path: Path) -> None:
    fresh = write_example_dataset(tmp_path / EXAMPLE_NAME, REPO / "FaceTemplate")
    shipped = EXAMPLES_DIR / EXAMPLE_NAME
    names = sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*.png"))
    assert names == sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.png"))
    assert len(names) == 15 * len(EXAMPLE_SIZES)
    for name in names:
        a, b = np.asarray(Image.open(shipped / name)), np.asarray(Image.open(fresh / name))
        assert a.shape == b.shape and np.array_equal(a, b), name
    corner = np.asarray(Image.open(shipped / "demo girl_f0128" / "f00.png"))
    assert corner.shape == (128, 128, 3) and corner[0, 0].tolist() == [0, 0, 0]  # background filled black


def test_demo_runs_the_whole_flow(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "LoRAInput").mkdir()
    assert main(["demo", "--project", str(tmp_path), "--steps", "2", "--dim", "4"]) == 0
    out, err = capfd.readouterr()
    printed = dict(line.split(None, 1) for line in out.splitlines())
    for note in ("kept in float32", "Casting directly", "gemm_4bit", "pip install kernels"):
        assert note not in err, f"dependency noise on stderr: {note!r}"  # charframe.deps

    dataset = tmp_path / "LoRAInput" / EXAMPLE_NAME
    assert Path(printed["dataset"]) == dataset
    work = tmp_path / "LoRAWork" / "demo" / "face"  # generate → clean → pick → export on the tiny models
    raw = sorted(p.name for p in (work / "raw").glob("*.png"))
    assert len(raw) == 15 * 2 and raw[:2] == ["f00-0.png", "f00-1.png"]  # 15 face codes × 2 candidates
    with Image.open(work / "raw" / "f12-1.png") as im:
        assert im.size == (128, 128) and "Seed: 1235" in im.info["parameters"] and "ControlNet 0" in im.info["parameters"]
    assert sorted(p.name for p in (work / "alpha").glob("*.png")) == raw
    picks = read_selection(work / "picks.toml")
    assert set(picks) == {p.split("-")[0] for p in raw} and set(picks.values()) <= {0, 1}
    for size in (64, 128):
        subset = dataset / f"demo girl_f{size:04d}"
        assert sorted(p.name for p in subset.glob("*.png")) == sorted({p.split("-")[0] + ".png" for p in raw})
        with Image.open(subset / "f12.png") as im:
            assert max(im.size) == size
    caption = (dataset / "demo girl_f0128" / "f00.txt").read_text(encoding="utf-8")
    assert caption.startswith("demo, white background, black background, simple background, from horizontal, from front")
    toml = tomlio.load(printed["toml"])
    assert toml["general"]["num_repeats"] == 4
    assert [d["resolution"] for d in toml["datasets"]] == [[512, 512]]
    assert Path(printed["preview"]).is_file()

    lora = Path(printed["lora"])
    assert lora == tmp_path / "LoRAOutput" / "demo" / "demo-Lora3x3A50p-AdamW8-4-100-2.safetensors"
    tensors, meta = load_lora_file(lora)
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in tensors  # 3x3 conv: Lora3x3
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_") for k in tensors)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"

    merged, _ = load_lora_file(printed["merged"])
    blocks = {block_of(k.split(".")[0]) for k in merged}
    assert "BASE" not in blocks and "IN01" in blocks and "OUT11" in blocks  # FACE: BASE 0, IN01 1, OUT11 1
    assert not any(k.startswith("lora_te") for k in merged)

    compressed, cmeta = load_lora_file(printed["compressed"])
    assert Path(printed["compressed"]).name == "demo-Lora3x3A50p-AdamW8-4-100-2-FACE-SvR16.safetensors"
    ranks = [v.shape[0] for k, v in compressed.items() if k.endswith("lora_down.weight")]
    assert ranks and max(ranks) <= 4
    assert '"compress"' in cmeta["charframe_history"] and '"merge"' in cmeta["charframe_history"]


def test_demo_refuses_a_file_as_project(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["demo", "--project", str(target)]) == 2
    err = capfd.readouterr().err
    assert f"{target}: a file; name a project folder (or a new one) for --project" in err
    assert not (tmp_path / "LoRAInput").exists()


def test_demo_makes_a_new_project_folder_that_can_go_on_to_the_body_stage(tmp_path: Path) -> None:
    from charframe.pipeline.demo import run_demo
    from charframe.pipeline.runner import Options, run_target

    project = tmp_path / "new" / "demo-project"
    run_demo(project, steps=1, dim=2, progress=False)
    assert (project / "Characters" / "demo.toml").is_file() and (project / "BodyTemplate" / "control").is_dir()
    _, report = run_target(project / "Characters" / "demo.toml", Options(stage="body", progress=False))
    assert not report.failed, [(r.step, r.message) for r in report.failed]
    body = project / "LoRAInput" / "2_demosf_demo"
    assert sorted(p.name for p in body.iterdir() if p.is_dir()) == [
        "demo girl_f0064", "demo girl_f0128", "demosf girl_b0128"]  # 64 px body pictures would be 32×64: skipped
    assert list((project / "LoRAOutput" / "demosf").glob("*-BODY-SvR16.safetensors"))


def test_demo_again_runs_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "LoRAInput").mkdir()
    assert main(["demo", "--project", str(tmp_path), "--steps", "1", "--dim", "2"]) == 0
    from charframe.pipeline.demo import run_demo

    result = run_demo(tmp_path, steps=1, dim=2, progress=False)
    assert {r.status for r in result.report.results} == {"up to date"}
    assert result.preview.is_file()


def test_demo_on_the_tiny_sdxl_model(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`charframe demo --family sdxl`: the same flow on the tiny SDXL model and its tiny SDXL ControlNet: face
    pictures at SDXL's square bucket with the model named in their PNG info, SDXL's bucketing in the dataset TOML,
    an SDXL LoRA with sd-scripts' UNet-only SDXL keys (the family's Lora1x1A50p recipe), merged, compressed and
    previewed."""
    assert main(["demo", "--family", "sdxl", "--project", str(tmp_path), "--steps", "1", "--dim", "2"]) == 0
    printed = dict(line.split(None, 1) for line in capfd.readouterr().out.splitlines())
    assert tomlio.load(tmp_path / "Characters" / "demo.toml")["generation"]["family"] == "sdxl"
    with Image.open(tmp_path / "LoRAWork" / "demo" / "face" / "raw" / "f12-1.png") as im:
        assert im.size == (128, 128) and "Model: charframe-tiny-sdxl," in im.info["parameters"]
    toml = tomlio.load(printed["toml"])
    assert (toml["general"]["max_bucket_reso"], toml["general"]["bucket_reso_steps"]) == (2048, 64)
    lora = Path(printed["lora"])
    assert lora.name == "demo-Lora1x1A50p-AdamW8-2-100-1.safetensors"
    tensors, meta = load_lora_file(lora)
    assert meta["ss_base_model_version"].startswith("sdxl_") and meta["ss_network_dim"] == "2"
    assert {k.split("_")[1] for k in tensors} == {"unet"}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    compressed, _ = load_lora_file(printed["compressed"])
    assert compressed and set(compressed) <= set(tensors)
    assert Path(printed["preview"]).is_file()
