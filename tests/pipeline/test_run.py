"""`charframe run` / `rerun` on the REAL steps and tiny models: a full face → body → group run, then reruns that
redo exactly what changed (by content, not by assumption), never lose a finished LoRA, never resume a state saved
from other data, and lock, fail and recover clearly. Issue 19."""

from __future__ import annotations

import json
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
from charframe.pipeline import history
from charframe.pipeline.lock import run_lock
from charframe.pipeline.runner import Options, Records, all_targets, rerun, run_target
from charframe.pipeline.stages import target_jobs
from charframe.util.manifest import digest_file
from project_builder import REPO, STEPS_ALL, character_toml, copy_project
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

AFTER_PREPARE = list(STEPS_ALL[4:])  # prepare, train, score, merge, compress, preview
QUIET = Options(progress=False)


def ran(report) -> list[tuple[str, str, str]]:
    return [(r.target, r.stage, r.step) for r in report.results if r.status == "ran"]


@pytest.fixture
def project(built, tmp_path: Path) -> Path:
    """A copy of the built project, brought up to date (a copy only rewrites its dataset TOMLs' paths)."""
    root = copy_project(built[0], tmp_path / "copy")
    report = rerun(all_targets(root), QUIET)
    assert not report.failed and {r.step for r in report.results if r.status == "ran"} == {"prepare"}
    return root


def _repaint(path: Path) -> None:
    img = np.asarray(Image.open(path)).copy()
    img[:16, :16] = 255  # a visible retouch: it reaches the LoRA
    Image.fromarray(img).save(path)


def test_full_run_through_face_body_and_group(built) -> None:
    root, report = built
    assert not report.failed, [(r.stage, r.step, r.message) for r in report.failed]
    stages = [(r.stage, r.step) for r in report.results if r.status == "ran"]
    assert stages == ([("face", s) for s in STEPS_ALL] + [("body-sf", s) for s in STEPS_ALL]
                      + [("face", s) for s in STEPS_ALL] + [("body-kps", s) for s in STEPS_ALL]
                      + [("group", s) for s in ["export"] + AFTER_PREPARE])
    inp = root / "LoRAInput"
    assert sorted(p.name for p in (inp / "4_krnk").iterdir() if p.is_dir()) == ["krnk girl_f0064"]  # 128: no upscale
    assert sorted(p.name for p in (inp / "2_krnksf_krnk").iterdir() if p.is_dir()) == [
        "krnk girl_f0064", "krnksf girl_b0128"]  # body 64 px would be 32×64: under the 64 px bucket
    group = inp / "1_krnksf_tyankkps_krnk_tyank"
    assert len([p for p in group.iterdir() if p.is_dir()]) == 4
    assert (group / "1_krnksf_tyankkps_krnk_tyank.toml").is_file()
    assert (group / "tyankkps girl_b0128" / "b00.txt").read_text().startswith("tyankkps, white background")
    # body images were generated with the face stage's compressed LoRA (named in their WebUI parameters)
    with Image.open(root / "LoRAWork" / "krnk" / "body-sf" / "raw" / "b12-0.png") as im:
        assert "<lora:krnk-Lora1x1A1-AdamW8-2-100-6-FACE-SvR16:0.8>" in im.info["parameters"]
    out = root / "LoRAOutput"
    for name, preset in (("krnk", "FACE"), ("krnksf", "BODY"), ("tyankkps", "BODY"), ("krnksf_tyankkps", "BODY")):
        tensors, _ = load_lora_file(out / name / f"{name}-Lora1x1A1-AdamW8-2-100-6-{preset}-SvR16.safetensors")
        assert tensors
    assert (out / "krnksf_tyankkps" / "krnksf_tyankkps-group-preview.png").is_file()
    assert list((root / "LoRALog" / "krnk-preview").glob("events.out.tfevents.*"))


def test_rerun_after_no_change_runs_nothing(project: Path, capfd) -> None:
    report = rerun(all_targets(project), QUIET)
    assert not report.failed and ran(report) == []
    assert {r.status for r in report.results} == {"up to date"}
    assert main(["rerun", "--all", "--project", str(project)]) == 0
    assert "nothing to do: 3 target(s) up to date" in capfd.readouterr().out


def test_a_retouched_dataset_image_retrains_without_being_overwritten(project: Path) -> None:
    target = project / "LoRAInput" / "2_krnksf_krnk" / "krnksf girl_b0128" / "b02.png"
    _repaint(target)  # a hand retouch
    report = rerun([project / "Characters" / "krnk.toml"], QUIET)
    assert ran(report) == [("krnk.toml", "body-sf", s) for s in AFTER_PREPARE]
    assert np.asarray(Image.open(target))[0, 0].tolist() == [255, 255, 255]  # the retouch stays


def test_a_caption_rule_touching_three_datasets_retrains_exactly_those_three_loras(project: Path) -> None:
    """Issue 19 acceptance: staleness by content, not by an upstream step having run."""
    with open(project / "charframe.toml", "a") as f:
        f.write('[[captions.rule]]\nname = "outfit shown"\nkind = "b"\ntags = ["outfit focus"]\n')
    report = rerun(all_targets(project), QUIET)
    trained = {(r.target, r.stage) for r in report.results if r.step == "train" and r.status == "ran"}
    assert trained == {("krnk.toml", "body-sf"), ("tyank.toml", "body-kps"), ("pair.group.toml", "group")}
    assert {(r.stage, r.step) for r in report.results if r.status == "ran" and r.step == "prepare"} == {
        ("face", "prepare"), ("body-sf", "prepare"), ("body-kps", "prepare"), ("group", "prepare")}
    caption = (project / "LoRAInput" / "2_krnksf_krnk" / "krnksf girl_b0128" / "b00.txt").read_text()
    assert caption.endswith("outfit focus")


def test_dry_run_lists_steps_inputs_outputs_and_what_waits(project: Path, capfd) -> None:
    (project / "Characters" / "krnk.toml").write_text(
        character_toml("krnk", "sf", "sailor uniform, red scarf", candidates=2))
    assert main(["run", str(project / "Characters" / "krnk.toml"), "--dry-run"]) == 0
    out = capfd.readouterr().out
    assert "krnk         face       train     up to date" in out
    assert "krnk         body-sf    generate  RUN (settings changed)" in out
    assert "krnk         body-sf    clean     decided after body-sf generate" in out
    assert "    in   LoRAInput/2_krnksf_krnk/{**/*.png,**/*.jpg,**/*.jpeg,**/*.webp} (6 files)" in out
    assert "    out  LoRAOutput/krnk/krnk-Lora1x1A1-AdamW8-2-100-6.safetensors" in out
    assert not list((project / "LoRAWork" / "krnk" / "pipeline").glob("*.lock"))  # a dry run takes no lock
    assert main(["rerun", "--all", "--project", str(project), "--dry-run"]) == 0
    out = capfd.readouterr().out
    assert "krnk.toml: 10 step(s) to run" in out and "tyank.toml: up to date" in out


def test_from_and_until_select_steps(project: Path) -> None:
    tyank = project / "Characters" / "tyank.toml"
    _, report = run_target(tyank, Options(stage="face", from_step="merge", until_step="compress", progress=False))
    assert ran(report) == [("tyank.toml", "face", "merge"), ("tyank.toml", "face", "compress")]
    with pytest.raises(CharframeError, match="unknown step 'trian'"):
        run_target(tyank, Options(from_step="trian"))
    with pytest.raises(CharframeError, match="train comes after the last step to run \\(export\\)"):
        run_target(tyank, Options(from_step="train", until_step="export"))


def test_from_step_still_runs_stale_earlier_steps_first(project: Path) -> None:
    """A copied project's TOMLs point at the original's images: `--from train` must not train on those."""
    copy = copy_project(project, project.parent / "moved")
    shutil.rmtree(project)  # the original is gone: its absolute paths lead nowhere
    _, report = run_target(copy / "Characters" / "tyank.toml", Options(stage="face", from_step="train", progress=False))
    assert ran(report) == [("tyank.toml", "face", s) for s in AFTER_PREPARE]  # prepare first: the TOML follows
    text = (copy / "LoRAInput" / "4_tyank" / "4_tyank.toml").read_text()
    assert str(copy) in text and "/copy/" not in text


def test_a_moved_project_stays_up_to_date_and_writes_its_own_paths(project: Path) -> None:
    moved = copy_project(project, project.parent / "moved")
    report = rerun(all_targets(moved), QUIET)
    assert not report.failed and ran(report) == [
        ("krnk.toml", "face", "prepare"), ("krnk.toml", "body-sf", "prepare"), ("tyank.toml", "face", "prepare"),
        ("tyank.toml", "body-kps", "prepare"), ("pair.group.toml", "group", "prepare")]  # new paths, no retraining
    text = (moved / "LoRAInput" / "4_tyank" / "4_tyank.toml").read_text()
    assert str(moved) in text and str(project) + "/" not in text


def test_a_truncated_lora_is_made_again(project: Path) -> None:
    [job] = target_jobs(project / "Characters" / "tyank.toml", "face")
    before = digest_file(job.compressed)
    job.compressed.write_bytes(job.compressed.read_bytes()[:1000])
    report = rerun([project / "Characters" / "tyank.toml"], QUIET)
    assert ran(report) == [("tyank.toml", "face", "compress")]  # same content again: nothing downstream reruns
    assert digest_file(job.compressed) == before


def test_two_retrains_keep_both_earlier_loras_restorable(project: Path, capfd) -> None:
    tyank = project / "Characters" / "tyank.toml"
    [job] = target_jobs(tyank, "face")
    first = digest_file(job.lora)
    for lr in (200, 300):
        text = tyank.read_text().replace("lr = 100", f"lr = {lr}", 1) if lr == 200 else \
            tyank.read_text().replace("lr = 200", "lr = 300", 1)
        tyank.write_text(text)
        _, report = run_target(tyank, Options(stage="face", progress=False))
        assert ("tyank.toml", "face", "train") in ran(report)
    [job] = target_jobs(tyank, "face")
    kept = history.versions(job)
    assert len(kept) == 2 and all(any(f.name.endswith("-FACE-SvR16.safetensors") for f in v.files) for v in kept)
    assert digest_file(history.previous_lora(job)) != first  # the newest kept is the lr 200 LoRA
    oldest = kept[0]
    assert main(["history", str(tyank), "--stage", "face"]) == 0
    assert oldest.name in capfd.readouterr().out
    assert main(["restore", str(tyank), oldest.name, "--stage", "face"]) == 0
    restored = next(p for p in job.lora.parent.glob("*.safetensors") if p.name.endswith("-100-6.safetensors"))
    assert digest_file(restored) == first
    assert len(history.versions(job)) == 3  # the set it replaced was archived too


def test_a_state_saved_from_other_data_is_not_resumed(project: Path, caplog) -> None:
    from charframe.training.outputs import inputs_digest, output_paths
    from charframe.training.state import RunState, STATE_FILE
    from charframe.util import toml as tomlio

    tyank = project / "Characters" / "tyank.toml"
    [job] = target_jobs(tyank, "face")
    _, state_dir = output_paths(job.plan.io, job.plan.output_name)
    state_dir.mkdir()
    run = RunState(0, str(job.lora), str(project / "LoRALog" / "x"), 1, time.time(), job.plan.to_dict(),
                   inputs=inputs_digest(job.plan))
    tomlio.write(state_dir / STATE_FILE, {"state": {k: v for k, v in run.__dict__.items() if k != "plan"},
                                         "plan": run.plan})
    _repaint(project / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f02.png")  # the dataset changes
    caplog.set_level("WARNING")
    _, report = run_target(tyank, Options(stage="face", progress=False))
    assert ("tyank.toml", "face", "train") in ran(report)
    assert "not resumed, the dataset, captions or model changed since it was saved at step 0; starting over" in caplog.text
    assert not state_dir.exists()


def test_second_concurrent_run_is_refused_and_dead_locks_are_taken_over(project: Path) -> None:
    state = project / "LoRAWork" / "tyank" / "pipeline"
    tyank = project / "Characters" / "tyank.toml"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / "run.lock").write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}", "since": {time.time()}}}')
        with pytest.raises(CharframeError, match=f"tyank is already being run by process {sleeper.pid}"):
            run_target(tyank, QUIET)
    finally:
        sleeper.kill()
        sleeper.wait()
    _, report = run_target(tyank, QUIET)  # dead PID: taken over
    assert not report.failed and not (state / "run.lock").exists()
    with run_lock(state, "tyank"):
        with pytest.raises(CharframeError, match="already being run"):
            run_target(tyank, QUIET)


def test_killed_run_resumes_at_the_step_it_died_in(project: Path) -> None:
    tyank = project / "Characters" / "tyank.toml"
    (project / "charframe.toml").write_text((project / "charframe.toml").read_text().replace("in a forest", "at sea"))
    _repaint(project / "LoRAWork" / "tyank" / "face" / "raw" / "f02-0.png")
    script = textwrap.dedent(f"""
        import os, signal
        from charframe.cleaning import retry
        from charframe.pipeline.runner import Options, run_target
        real = retry.pick_with_retries  # the pick step's function (pipeline.steps names it)
        def pick_then_die(*a, **k):  # the real step, then a power cut before its record is written
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        retry.pick_with_retries = pick_then_die
        run_target({str(tyank)!r}, Options(stage="face", progress=False))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    state = project / "LoRAWork" / "tyank" / "pipeline"
    assert (state / "run.lock").is_file()  # left behind by the killed process
    records = json.loads((state / "steps.json").read_text())["outputs"]
    assert "face.pick" not in records and "face.clean" in records
    _, report = run_target(tyank, Options(stage="face", progress=False))
    assert [(r.step, r.status) for r in report.results][:4] == [
        ("generate", "up to date"), ("clean", "up to date"), ("pick", "ran"), ("export", "ran")]


def test_rerun_goes_on_past_failures_with_clear_messages(project: Path, capfd) -> None:
    chars = project / "Characters"
    (chars / "krnk.toml").write_text(character_toml("krnk", "sf", "sailor uniform", candidates=2,
                                                    model="LoRAInput/missing.safetensors"))
    (chars / "trio.group.toml").write_text('[[member]]\ncharacter = "tyank"\noutfit = "kps"\n'
                                           '[[member]]\ncharacter = "nobody"\noutfit = "x"\n')
    _repaint(project / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f02.png")
    assert main(["rerun", "--all", "--project", str(project)]) == 1
    out, err = capfd.readouterr()
    rows = [line.split()[:4] for line in out.splitlines()]
    assert ["krnk.toml", "-", "load", "failed"] in rows and ["trio.group.toml", "-", "load", "failed"] in rows
    assert "generation.model: " in out and "missing.safetensors does not exist" in out
    assert "trio.group.toml: member 2 names character 'nobody', but" in out and "(known: krnk, tyank)" in out
    assert "Traceback" not in out + err
    assert ["tyank", "face", "train", "ran"] in rows  # tyank ran although krnk failed before it (rows name whose step)


def test_a_failed_outfit_does_not_block_its_sibling(project: Path) -> None:
    krnk = project / "Characters" / "krnk.toml"
    krnk.write_text(krnk.read_text().replace('[outfits]\n', '[outfits]\naa = "apron"\n'))
    (project / "LoRAWork" / "krnk" / "body-aa").write_text("a file where the outfit's folder goes")
    _repaint(project / "LoRAInput" / "2_krnksf_krnk" / "krnksf girl_b0128" / "b02.png")
    _, report = run_target(krnk, QUIET)
    status = {(r.stage, r.step): r.status for r in report.results}
    assert status[("body-aa", "generate")] == "failed"
    assert status[("body-aa", "clean")] == "blocked" and status[("body-aa", "train")] == "blocked"
    assert status[("body-sf", "train")] == "ran" and status[("face", "preview")] == "up to date"


def test_unwritable_output_folder_fails_clearly_and_keeps_finished_work(project: Path) -> None:
    tyank = project / "Characters" / "tyank.toml"
    _repaint(project / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f02.png")
    out_dir = project / "LoRAOutput" / "tyank"
    shutil.move(str(out_dir), str(project / "kept"))
    out_dir.write_text("not a folder")  # a full or read-only disk: the trainer cannot write its output
    _, report = run_target(tyank, Options(stage="face", progress=False))
    rows = {r.step: r for r in report.results}
    assert rows["prepare"].status == "ran" and rows["train"].status == "failed"
    assert "not a folder" in rows["train"].message.lower() or "cannot write" in rows["train"].message
    assert [rows[s].status for s in ("score", "merge", "compress", "preview")] == ["blocked"] * 4
    out_dir.unlink()
    _, report = run_target(tyank, Options(stage="face", progress=False))
    assert ran(report)[:4] == [("tyank.toml", "face", s) for s in ["train", "score", "merge", "compress"]]


def test_records_are_one_file_per_character_with_project_relative_keys(project: Path) -> None:
    records = Records()
    [job] = target_jobs(project / "Characters" / "tyank.toml", "face")
    m = records.of(job)
    assert m.path == project / "LoRAWork" / "tyank" / "pipeline" / "steps.json"
    entry = m.outputs["face.train"]
    assert list(entry["files"]) == ["LoRAOutput/tyank/tyank-Lora1x1A1-AdamW8-2-100-6.safetensors"]
    assert all(not k.startswith("/") for k in entry["inputs"])


def test_preview_draws_the_previous_version_as_a_row(project: Path) -> None:
    from charframe.pipeline.preview import preview_job

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
    # one line when a step starts (with the time left, from how long it took last time) and one when it ends
    assert first[0].startswith("step 1 of ") and ": krnk face " in first[0] and first[0].endswith(" left")
    ends = [line for line in first if ": ran in " in line]
    assert ends and all(line.startswith("krnk face ") for line in ends)
    assert first[first.index(ends[-1]) + 1].startswith("character")  # then the table of what ran
    assert main(["run", "krnk", "--stage", "face"]) == 0
    out = capfd.readouterr().out
    assert out.splitlines() == [f"nothing to do: 1 target(s) up to date (krnk: {len(STEPS_ALL)} steps)"]
    assert main(["-q", "run", "krnk", "--stage", "face", "-v"]) == 0  # -v: every row
    rows = [line.split()[:4] for line in capfd.readouterr().out.splitlines()[2:]]
    assert rows[0] == ["krnk", "face", "generate", "up"] and len(rows) == len(STEPS_ALL)


def test_run_takes_several_files_and_group_rows_name_the_member(project: Path, capfd, monkeypatch) -> None:
    monkeypatch.chdir(project)
    chars = project / "Characters"
    assert main(["-q", "run", str(chars / "krnk.toml"), str(chars / "pair.group.toml"), "-v"]) == 0
    owners = [line.split()[0] for line in capfd.readouterr().out.splitlines()[2:]]
    assert owners[:2 * len(STEPS_ALL)] == ["krnk"] * 2 * len(STEPS_ALL) and {"tyank", "pair"} <= set(owners) and "pair.group.toml" not in owners


def test_run_says_when_the_templates_are_missing(tmp_path: Path, capfd, monkeypatch) -> None:
    (tmp_path / "Characters").mkdir()
    (tmp_path / "LoRAInput").mkdir()
    (tmp_path / "Characters" / "krnk.toml").write_text(character_toml("krnk", "sf", "sailor uniform"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "krnk", "--stage", "face", "--dry-run"]) == 0
    err = capfd.readouterr().err
    assert "FaceTemplate has 0 template files" in err and "charframe templates" in err and "BodyTemplate" not in err


def test_rerun_all_with_a_dropped_file_says_what_to_drop(project: Path, capfd) -> None:
    assert main(["rerun", "--all", str(project / "Characters" / "krnk.toml")]) == 2
    err = capfd.readouterr().err
    assert "krnk.toml: --all takes the project folder" in err and "drop that folder on rerun-all" in err
