"""Pivotal tuning through the pipeline: off by default (plans as before), on with `[training.pivotal]`: face trains
`krnk`, body trains `krnksf` and reuses the face LoRA's `krnk`, a group reuses its members' body LoRAs; a full run
of the real steps on the tiny models carries every trigger from face to body (whose images are generated with the
face LoRA's trigger) to group, through merge and compress."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from charframe.character import character_toml, load_character
from charframe.pipeline.runner import Options, run_target
from charframe.pipeline.stages import target_jobs
from charframe.training.plan import Pivotal
from PIL import Image
from project_builder import copy_project, make_project
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

PIVOTAL = "[training.pivotal]\nenabled = true\nvectors = 2\nlr = 0.01\nstop_at = 1.0\n"


def _project(root: Path, pivotal: bool = True) -> Path:
    make_project(root)
    if pivotal:
        for kw in ("krnk", "tyank"):
            path = root / "Characters" / f"{kw}.toml"
            path.write_text(path.read_text() + PIVOTAL)
    return root


def test_stage_plans(tmp_path: Path) -> None:
    root = _project(tmp_path / "on")
    jobs = {(j.owner, j.name): j for j in target_jobs(root / "Characters" / "pair.group.toml")}
    face, body = jobs[("krnk", "face")], jobs[("krnk", "body-sf")]
    assert face.plan.pivotal == Pivotal(trigger="krnk", vectors=2, init_text="girl", lr=0.01, stop_at=1.0)
    assert body.plan.pivotal.trigger == "krnksf" and body.plan.pivotal.reuse == (str(face.compressed),)
    assert body.face_lora == face.compressed  # the file the body images are generated with
    group = jobs[("pair", "group")]
    assert group.plan.pivotal.trigger is None
    assert group.plan.pivotal.reuse == (str(body.compressed), str(jobs[("tyank", "body-kps")].compressed))
    off = _project(tmp_path / "off", pivotal=False)
    for job in target_jobs(off / "Characters" / "pair.group.toml"):
        assert job.plan.pivotal == Pivotal() and "pivotal" not in job.plan.to_dict()


def test_character_file_round_trips_its_pivotal_table(tmp_path: Path) -> None:
    root = _project(tmp_path)
    c = load_character(root / "Characters" / "krnk.toml")
    assert c.training.pivotal.enabled and c.training.pivotal.vectors == 2
    copy = root / "Characters" / "copy.toml"
    copy.write_text(character_toml(c))
    assert load_character(copy).training == c.training


def _bundle(path: Path) -> dict[str, torch.Tensor]:
    return {k.split(".")[1]: v for k, v in load_file(str(path)).items() if k.startswith("bundle_emb.")}


def test_full_run_carries_the_triggers_from_face_to_body_to_group(built, tmp_path: Path) -> None:
    """The session's project with pivotal tuning turned on: every training reruns, and everything after it (the body
    images, made with the new face LoRA, included); the face images are what they were."""
    root = copy_project(built[0], tmp_path / "proj")
    for kw in ("krnk", "tyank"):
        path = root / "Characters" / f"{kw}.toml"
        path.write_text(path.read_text() + PIVOTAL)
    _, report = run_target(root / "Characters" / "pair.group.toml", Options(progress=False))
    assert not report.failed, [(r.stage, r.step, r.message) for r in report.failed]
    ran = {(r.stage, r.step) for r in report.results if r.status == "ran"}
    assert ("face", "train") in ran and ("body-sf", "generate") in ran and ("face", "generate") not in ran
    jobs = {(j.owner, j.name): j for j in target_jobs(root / "Characters" / "pair.group.toml")}
    face_job, body_job, group_job = jobs[("krnk", "face")], jobs[("krnk", "body-sf")], jobs[("pair", "group")]
    face = _bundle(face_job.lora)
    assert list(face) == ["krnk"] and face["krnk"].shape == (2, 32)
    for path in (face_job.merged, face_job.compressed):
        assert torch.equal(_bundle(path)["krnk"], face["krnk"])
    body = _bundle(body_job.compressed)
    assert sorted(body) == ["krnk", "krnksf"] and torch.equal(body["krnk"], face["krnk"])  # reused as it was
    with Image.open(root / "LoRAWork" / "krnk" / "body-sf" / "raw" / "b12-0.png") as im:  # made with the face LoRA
        prompt, _, fields = im.info["parameters"].split("\n")
    assert prompt.startswith("1girl, krnk, ")  # the character prompt names the keyword already: not added twice
    assert f'TI hashes: "krnk: {face_job.compressed.stem}"' in fields  # the bundle's vectors were used
    assert (body_job.lora.with_name(body_job.lora.stem + "-embeddings") / "krnksf.safetensors").is_file()
    group = _bundle(group_job.compressed)
    assert sorted(group) == ["krnk", "krnksf", "tyank", "tyankkps"] and torch.equal(group["krnksf"], body["krnksf"])
    out = root / "LoRAOutput"
    assert (out / "krnksf_tyankkps" / "krnksf_tyankkps-group-preview.png").is_file()
