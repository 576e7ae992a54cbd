"""`charframe run` / `rerun`: a full run through face → body → group on the tiny model, then reruns that redo
exactly what changed. Generation-side steps are the small real stand-ins of `pipeline_stand_ins`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.cli import main
from charframe.errors import CharframeError
from charframe.lora.io import load_lora_file
from charframe.pipeline.lock import run_lock
from charframe.pipeline.runner import Options, all_targets, rerun, run_target
from charframe.pipeline.steps import STEPS, with_calls
from charframe.util import toml as tomlio
from pipeline_stand_ins import CALLS
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

REPO = Path(__file__).resolve().parents[2]
TABLE = with_calls(STEPS, CALLS)
RECIPE = 'logic = "Lora1x1A1-AdamW8"\ndim = 2\nlr = 100\nsteps = 1\n'
AFTER_PREPARE = ["prepare", "train", "merge", "compress", "preview"]
ALL = ["generate", "clean", "pick", "export"] + AFTER_PREPARE


def character_toml(kw: str, outfit: str, outfit_prompt: str, model: str = "") -> str:
    stages = "".join(f"[training.{s}]\n{RECIPE}" + ('preset = "BODY"\n' if s != "face" else "") for s in ("face", "body", "group"))
    return (f'keyword = "{kw}"\nclass = "girl"\nprompt = "1girl, {kw}"\nfill = "black"\n'
            f'[outfits]\n{outfit} = "{outfit_prompt}"\n[generation]\nmodel = "{model}"\n[export]\nsizes = [64, 128]\n{stages}')


def make_project(root: Path) -> Path:
    (root / "Characters").mkdir(parents=True)
    (root / "LoRAInput").mkdir()
    (root / "charframe.toml").write_text('[preview]\nscenes = ["in a forest", "in the snow"]\nseeds = [1]\n'
                                         'tiny_size = 32\ntiny_steps = 1\n')
    (root / "Characters" / "krnk.toml").write_text(character_toml("krnk", "sf", "sailor uniform"))
    (root / "Characters" / "tyank.toml").write_text(character_toml("tyank", "kps", "kimono"))
    (root / "Characters" / "pair.group.toml").write_text(
        '[[member]]\ncharacter = "krnk"\noutfit = "sf"\n[[member]]\ncharacter = "tyank"\noutfit = "kps"\n')
    return root


def ran(report) -> list[tuple[str, str, str]]:
    return [(r.target, r.stage, r.step) for r in report.results if r.status == "ran"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = make_project(tmp_path_factory.mktemp("full") / "proj")
    _, report = run_target(root / "Characters" / "pair.group.toml", Options(progress=False), TABLE)
    return root, report


@pytest.fixture
def project(built, tmp_path: Path) -> Path:
    """A copy of the built project (mtimes kept: a moved project stays up to date)."""
    dest = tmp_path / "copy"
    shutil.copytree(built[0], dest)
    return dest


def test_full_run_through_face_body_and_group(built) -> None:
    root, report = built
    assert not report.failed
    stages = [(r.stage, r.step) for r in report.results if r.status == "ran"]
    assert stages == ([("face", s) for s in ALL] + [("body-sf", s) for s in ALL]
                      + [("face", s) for s in ALL] + [("body-kps", s) for s in ALL] + [("group", s) for s in ["export"] + AFTER_PREPARE])
    inp = root / "LoRAInput"
    assert sorted(p.name for p in (inp / "4_krnk").iterdir() if p.is_dir()) == ["krnk girl_f0064", "krnk girl_f0128"]
    assert sorted(p.name for p in (inp / "2_krnksf_krnk").iterdir() if p.is_dir()) == [
        "krnk girl_f0064", "krnk girl_f0128", "krnksf girl_b0064", "krnksf girl_b0128"]
    group = inp / "1_krnksf_tyankkps_krnk_tyank"
    assert len([p for p in group.iterdir() if p.is_dir()]) == 8
    assert (group / "1_krnksf_tyankkps_krnk_tyank.toml").is_file()
    assert (group / "tyankkps girl_b0064" / "b00.txt").read_text().startswith("tyankkps, white background")
    # body images were generated with the face stage's compressed LoRA
    assert (root / "LoRAWork" / "krnk" / "body-sf" / "raw" / ".face_lora").read_text() == \
        "krnk-Lora1x1A1-AdamW8-2-100-1-FACE-SvR16.safetensors"
    out = root / "LoRAOutput"
    for name, preset in (("krnk", "FACE"), ("krnksf", "BODY"), ("tyankkps", "BODY"), ("krnksf_tyankkps", "BODY")):
        tensors, _ = load_lora_file(out / name / f"{name}-Lora1x1A1-AdamW8-2-100-1-{preset}-SvR16.safetensors")
        assert tensors
    grid = Image.open(out / "krnksf_tyankkps" / "krnksf_tyankkps-group-preview.png")
    # 2 scenes × 1 seed, then the 3 strengths of the sweep; base, LoRA, merged, compressed; gaps; a title block
    assert grid.size[0] >= 112 + 5 * (128 + 8) + 28 and grid.size[1] >= 4 * (128 + 8) + 5 * 19
    assert list((root / "LoRALog" / "krnk-preview").glob("events.out.tfevents.*"))


def test_rerun_after_no_change_runs_nothing(project: Path, capfd) -> None:
    report = rerun(all_targets(project), Options(progress=False), TABLE)
    assert not report.failed and ran(report) == []
    assert {r.status for r in report.results} == {"up to date"}
    # the CLI (the real table: generate is not in this checkout, but nothing needs to run)
    assert main(["rerun", "--all", "--project", str(project)]) == 0
    assert "nothing to do: 3 target(s) up to date" in capfd.readouterr().out


def _repaint(path: Path) -> None:
    img = np.asarray(Image.open(path)).copy()
    img[:4, :4] = 255
    Image.fromarray(img).save(path)


def test_touching_one_image_reruns_only_its_dataset_and_downstream(project: Path) -> None:
    _repaint(project / "LoRAInput" / "2_krnksf_krnk" / "krnksf girl_b0064" / "b01.png")  # a hand retouch
    report = rerun(all_targets(project), Options(progress=False), TABLE)
    assert ran(report) == [("krnk.toml", "body-sf", s) for s in AFTER_PREPARE]
    img = np.asarray(Image.open(project / "LoRAInput" / "2_krnksf_krnk" / "krnksf girl_b0064" / "b01.png"))
    assert img[0, 0].tolist() == [255, 255, 255]  # the retouched image was not overwritten by export

    _repaint(project / "LoRAWork" / "tyank" / "face" / "raw" / "f02-0.png")  # a new candidate image
    report = rerun(all_targets(project), Options(progress=False), TABLE)
    assert ran(report) == ([("tyank.toml", "face", s) for s in ["clean", "pick", "export"] + AFTER_PREPARE]
                           + [("tyank.toml", "body-kps", s) for s in ALL]  # new face LoRA → new body images
                           + [("pair.group.toml", "group", s) for s in ["export"] + AFTER_PREPARE])


def test_changing_one_caption_rule_recaptions_and_retrains(project: Path) -> None:
    with open(project / "charframe.toml", "a") as f:
        f.write('[[captions.rule]]\nname = "background"\ntags = ["black background"]\n')
    report = rerun([project / "Characters" / "tyank.toml"], Options(stage="face", progress=False), TABLE)
    assert ran(report) == [("tyank.toml", "face", s) for s in AFTER_PREPARE]
    caption = (project / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f00.txt").read_text()
    assert caption.startswith("tyank, black background, from horizontal")


def test_dry_run_lists_steps_inputs_outputs_and_state(project: Path, capfd) -> None:
    (project / "Characters" / "krnk.toml").write_text(character_toml("krnk", "sf", "sailor uniform, red scarf"))
    assert main(["run", str(project / "Characters" / "krnk.toml"), "--dry-run"]) == 0
    out = capfd.readouterr().out
    assert "krnk         face       train     up to date" in out
    assert "krnk         body-sf    generate  RUN (settings changed)" in out
    assert "krnk         body-sf    train     RUN (upstream output" in out
    assert "    in   LoRAInput/2_krnksf_krnk/{**/*.png,**/*.jpg,**/*.jpeg,**/*.webp} (12 files)" in out
    assert "    out  LoRAOutput/krnk/krnk-Lora1x1A1-AdamW8-2-100-1.safetensors" in out
    assert not list((project / "LoRAWork" / "krnk" / "pipeline").glob("*.lock"))  # a dry run takes no lock


def test_from_and_until_select_steps(project: Path) -> None:
    _, report = run_target(project / "Characters" / "tyank.toml", Options(stage="face", from_step="merge", until_step="compress",
                                                                         progress=False), TABLE)
    assert ran(report) == [("tyank.toml", "face", "merge"), ("tyank.toml", "face", "compress")]
    with pytest.raises(CharframeError, match="unknown step 'trian'"):
        run_target(project / "Characters" / "tyank.toml", Options(from_step="trian"), TABLE)


def test_second_concurrent_run_is_refused_and_dead_locks_are_taken_over(project: Path) -> None:
    state = project / "LoRAWork" / "tyank" / "pipeline"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / "run.lock").write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}", "since": {time.time()}}}')
        with pytest.raises(CharframeError, match=f"tyank is already being run by process {sleeper.pid}"):
            run_target(project / "Characters" / "tyank.toml", Options(progress=False), TABLE)
    finally:
        sleeper.kill()
        sleeper.wait()
    _, report = run_target(project / "Characters" / "tyank.toml", Options(progress=False), TABLE)  # dead PID: taken over
    assert not report.failed and not (state / "run.lock").exists()
    with run_lock(state, "tyank"):
        with pytest.raises(CharframeError, match="already being run"):
            run_target(project / "Characters" / "tyank.toml", Options(progress=False), TABLE)


def test_killed_run_resumes_at_the_step_it_died_in(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    script = textwrap.dedent(f"""
        from charframe.pipeline.runner import Options, run_target
        from charframe.pipeline.steps import STEPS, with_calls
        from pipeline_stand_ins import CALLS
        run_target({str(root / "Characters" / "krnk.toml")!r}, Options(stage="face", until_step="export", progress=False),
                   with_calls(STEPS, CALLS))
    """)
    env = dict(os.environ, PIPELINE_TEST_KILL_IN="pick",
               PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    state = root / "LoRAWork" / "krnk" / "pipeline"
    assert (state / "run.lock").is_file()  # left behind by the killed process
    assert sorted(p.name for p in state.glob("*.json")) == ["face.clean.json", "face.generate.json"]
    _, report = run_target(root / "Characters" / "krnk.toml", Options(stage="face", until_step="export", progress=False), TABLE)
    assert [(r.step, r.status) for r in report.results] == [
        ("generate", "up to date"), ("clean", "up to date"), ("pick", "ran"), ("export", "ran"),
        ("prepare", "skipped"), ("train", "skipped"), ("merge", "skipped"), ("compress", "skipped"), ("preview", "skipped")]


def test_rerun_goes_on_past_failures_with_clear_messages(project: Path, capfd) -> None:
    chars = project / "Characters"
    (chars / "krnk.toml").write_text(character_toml("krnk", "sf", "sailor uniform", model="LoRAInput/missing.safetensors"))
    (chars / "trio.group.toml").write_text('[[member]]\ncharacter = "tyank"\noutfit = "kps"\n'
                                           '[[member]]\ncharacter = "nobody"\noutfit = "x"\n')
    _repaint(project / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f01.png")
    assert main(["rerun", "--all", "--project", str(project)]) == 1
    out, err = capfd.readouterr()
    rows = [line.split()[:4] for line in out.splitlines()]
    assert ["krnk.toml", "-", "load", "failed"] in rows and ["trio.group.toml", "-", "load", "failed"] in rows
    assert "generation.model: " in out and "missing.safetensors does not exist" in out
    assert "trio.group.toml: member 2 names character 'nobody', but" in out and "(known: krnk, tyank)" in out
    assert "Traceback" not in out + err
    # tyank still ran (its face dataset changed) although krnk failed before it
    assert ["tyank", "face", "train", "ran"] in rows  # rows name whose step it is


def test_unwritable_output_folder_fails_clearly_and_keeps_finished_work(project: Path) -> None:
    _repaint(project / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f01.png")
    out_dir = project / "LoRAOutput" / "tyank"
    shutil.rmtree(out_dir)
    out_dir.write_text("not a folder")  # a full or read-only disk: the trainer cannot write its output
    _, report = run_target(project / "Characters" / "tyank.toml", Options(stage="face", progress=False), TABLE)
    rows = {r.step: r for r in report.results}
    assert rows["prepare"].status == "ran" and rows["train"].status == "failed"
    assert "cannot write the output" in rows["train"].message or "not a folder" in rows["train"].message.lower()
    assert [rows[s].status for s in ("merge", "compress", "preview")] == ["blocked"] * 3
    out_dir.unlink()
    _, report = run_target(project / "Characters" / "tyank.toml", Options(stage="face", progress=False), TABLE)
    assert ran(report) == [("tyank.toml", "face", s) for s in ["train", "merge", "compress", "preview"]]


def test_preview_draws_the_previous_version_as_a_row(project: Path) -> None:
    from charframe.pipeline.preview import preview_job
    from charframe.pipeline.stages import target_jobs

    job = target_jobs(project / "Characters" / "krnk.toml", "face")[0]
    with Image.open(job.preview) as im:
        without = im.size
    previous = job.lora.with_name("krnk-older.safetensors")
    shutil.copy(job.lora, previous)
    assert preview_job(job, progress=False, previous=previous) == job.preview
    with Image.open(job.preview) as im:
        assert im.size[0] == without[0] and im.size[1] - without[1] >= 128 + 8  # one more row
        px = np.asarray(im.convert("RGB"))
    assert (px[-16 - 64, 112 + 16 + 64] != (96, 96, 96)).any()  # drawn, not the grey "not drawn" tile


def test_run_twice_prints_one_line_the_second_time(project: Path, capfd, monkeypatch) -> None:
    monkeypatch.chdir(project)
    (project / "LoRAInput" / "4_krnk" / "krnk girl_f0064" / "f01.txt").write_text("changed")  # a caption edited by hand
    assert main(["run", "krnk", "--stage", "face"]) == 0
    first = capfd.readouterr().out.splitlines()
    # a changed caption: train, merge, compress, preview; how long each took last time gives the time left
    assert first[0].startswith("step 1 of 4: krnk face train, about ") and first[0].endswith(" left")
    assert first[1].startswith("krnk face train: ran in ") and first[8].startswith("character")  # then the table
    assert [line.split(":")[0] for line in first[1:8:2]] == [f"krnk face {s}" for s in ("train", "merge", "compress", "preview")]
    assert main(["run", "krnk", "--stage", "face"]) == 0
    out, err = capfd.readouterr()
    assert out.splitlines() == ["nothing to do: 1 target(s) up to date (krnk: 9 steps)"]
    assert main(["-q", "run", "krnk", "--stage", "face", "-v"]) == 0  # -v: every row, group rows name the member
    rows = [line.split()[:4] for line in capfd.readouterr().out.splitlines()[2:]]
    assert rows[0] == ["krnk", "face", "generate", "up"] and len(rows) == 9


def test_run_takes_several_files_and_group_rows_name_the_member(project: Path, capfd, monkeypatch) -> None:
    monkeypatch.chdir(project)
    chars = project / "Characters"
    assert main(["-q", "run", str(chars / "krnk.toml"), str(chars / "pair.group.toml"), "-v"]) == 0
    owners = [line.split()[0] for line in capfd.readouterr().out.splitlines()[2:]]
    assert owners[:18] == ["krnk"] * 18 and {"tyank", "pair"} <= set(owners) and "pair.group.toml" not in owners


def test_run_says_when_the_templates_are_missing(tmp_path: Path, capfd, monkeypatch) -> None:
    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    assert main(["run", "krnk", "--stage", "face", "--dry-run"]) == 0
    err = capfd.readouterr().err
    assert "FaceTemplate has 0 template files" in err and "charframe templates" in err and "BodyTemplate" not in err


def test_rerun_all_with_a_dropped_file_says_what_to_drop(project: Path, capfd) -> None:
    assert main(["rerun", "--all", str(project / "Characters" / "krnk.toml")]) == 2
    err = capfd.readouterr().err
    assert "krnk.toml: --all takes the project folder" in err and "drop that folder on rerun-all" in err
