"""Hostile inputs to training (issue 12): each refused with one line naming the file or key, exit code set,
no user file changed, and finished steps never lost."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from charframe.cli import main
from charframe.errors import CharframeError
from charframe.lora.io import load_lora_file
from charframe.models.tiny import build_tiny_sd
from charframe.training import outputs
from charframe.training.data import load_dataset
from charframe.training.engines import kohya, train_with
from charframe.training.engines.builtin import train
from charframe.training.outputs import find_state
from charframe.training.plan import make_plan
from charframe.training.result import TrainingInterrupted
from charframe.training.state import load_state
from train_data import charframe_dataset, one_thread, write_images, write_toml  # noqa: F401 (autouse fixture)

ARGS = ["--logic", "Lora1x1A1-AdamW8", "--dim", "2", "--lr", "100", "--steps", "1"]


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes (to assert nothing was changed or added)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return code, err.splitlines()[-1] if err else ""


def _plan(root: Path, steps: int, n: int = 1, **kw):
    toml = kw.pop("dataset", None) or charframe_dataset(root, n=n, repeats=1, batch=1)
    return make_plan("Lora1x1A1-AdamW8", 2, kw.pop("lr", 100), steps, dataset=toml, out="krnk",
                     output_dir=str(root / "LoRAOutput"), logging_dir=str(root / "LoRALog"), **kw)


# --- point 1: output locations checked before step 1; a failing final save keeps the weights ------


def test_output_dir_that_is_a_file_is_refused_before_training(tmp_path: Path, capsys) -> None:
    toml = charframe_dataset(tmp_path, n=1, repeats=1, batch=1)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    before = tree(tmp_path)
    code, line = cli(["train", str(toml), *ARGS, "--out", "x", "--output-dir", str(blocker)], capsys)
    assert code == 2
    assert line.endswith(f"{blocker}: is a file, not a folder; choose another --output-dir")
    assert tree(tmp_path) == before and not (tmp_path / "LoRALog").exists()


def test_an_output_name_too_long_for_the_file_system_is_refused(tmp_path: Path, capsys) -> None:
    toml = charframe_dataset(tmp_path, n=1, repeats=1, batch=1)
    before = tree(tmp_path)
    code, line = cli(["train", str(toml), *ARGS, "--out", "k" * 230], capsys)
    assert code == 2 and "over this file system's limit of 255; choose a shorter --out" in line
    assert tree(tmp_path) == before and not (tmp_path / "LoRAOutput").exists()
    code, line = cli(["train", str(toml), *ARGS, "--out", "k" * 256], capsys)  # the folder name itself
    assert code == 2 and "the folder name is 256 bytes" in line and tree(tmp_path) == before


def test_a_failing_final_save_keeps_the_weights_and_the_state(tmp_path: Path, monkeypatch) -> None:
    plan = _plan(tmp_path, 2)
    real = outputs.save_lora_file
    target = tmp_path / "LoRAOutput" / "krnk" / f"{plan.output_name}.safetensors"

    def full_disk(path, tensors, metadata=None):
        if Path(path) == target:
            raise OSError(28, "No space left on device")
        return real(path, tensors, metadata)

    monkeypatch.setattr(outputs, "save_lora_file", full_disk)
    with pytest.raises(CharframeError) as info:
        train(plan, components=build_tiny_sd())
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write the LoRA (No space left on device); the trained weights are in ")
    fallback = Path(message.split("the trained weights are in ")[1].split(";")[0])
    assert fallback.parent == target.parent and fallback.name.startswith("charframe-")
    tensors, md = load_lora_file(fallback)
    assert md["ss_steps"] == "2" and tensors
    assert info.value.exit_code == 1 and "run the same command with resume" in message
    assert not target.exists() and not list(target.parent.glob("*.train.toml"))
    run, _, _ = load_state(find_state(plan.io, plan.output_name))
    assert run.step == 2
    monkeypatch.setattr(outputs, "save_lora_file", real)
    again = train(plan, components=build_tiny_sd(), resume=True)  # retries only the save
    assert again.output == target and again.steps_done == 2
    assert load_lora_file(target)[0].keys() == tensors.keys()


# --- point 5: images that pass `prepare` but not a full decode -------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_header_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR size replaced (CRC recomputed, so only the size lies)."""
    ihdr = png[16:29]
    fixed = struct.pack(">II", width, height) + ihdr[8:]
    return png[:8] + _png_chunk(b"IHDR", fixed) + png[33:]


BAD_IMAGES = {
    "truncated": lambda png: png[: len(png) // 2],
    "lying header": lambda png: _with_header_size(png, 96, 96),
    "100000x100000 header": lambda png: _with_header_size(png, 100000, 100000),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_a_bad_image_is_one_message_before_step_1(kind: str, tmp_path: Path, capsys) -> None:
    toml = charframe_dataset(tmp_path, n=2, repeats=1, batch=1)
    bad = next(toml.parent.rglob("f01.png"))
    bad.write_bytes(BAD_IMAGES[kind](bad.read_bytes()))
    before = tree(tmp_path)
    code, line = cli(["train", str(toml), *ARGS, "--out", "x"], capsys)
    assert code == 2 and line.startswith(f"error: {bad}: ")
    assert "re-export or remove the image" in line
    assert tree(tmp_path) == before and not (tmp_path / "LoRAOutput").exists() and not (tmp_path / "LoRALog").exists()


def test_an_image_that_breaks_during_training_keeps_the_finished_steps(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 4, n=2)
    images = sorted(Path(plan.io.dataset).parent.rglob("*.png"))
    good = {p: p.read_bytes() for p in images}

    def break_images(step: int, loss: float) -> None:
        if step == 2:
            for p in images:
                p.write_bytes(good[p][:100])

    with pytest.raises(CharframeError) as info:
        train(plan, components=build_tiny_sd(), on_step=break_images)
    message = str(info.value)
    assert "cannot be decoded" in message and any(message.startswith(f"{p}: ") for p in images)
    assert "2 finished steps are saved in" in message and message.endswith("run the same command with resume")
    run, _, _ = load_state(find_state(plan.io, plan.output_name))
    assert run.step == 2 and len(run.losses) == 2
    for p, data in good.items():
        p.write_bytes(data)
    assert train(plan, components=build_tiny_sd(), resume=True).steps_done == 4


# --- point 6: hand-written dataset TOMLs -----------------------------------------------------------


@pytest.mark.parametrize("general,dataset,expected", [
    ({}, {"batch_size": 0}, r"datasets\[0\]\.batch_size: expected an integer ≥ 1, got 0"),
    ({}, {"resolution": "big"}, r"datasets\[0\]\.resolution: expected an integer or a list of integers, got 'big'"),
    ({}, {"resolution": [-512, 0]}, r"datasets\[0\]\.resolution\[0\]: expected an integer ≥ 1, got -512"),
    ({}, {"resolution": [512, 512, 512]}, r"\[\[datasets\]\] #1: resolution: expected one size or \[width, height\]"),
    ({"shuffle_captions": True}, {}, r"general\.shuffle_captions: unknown key \(did you mean 'shuffle_caption'\?\)"),
    ({"flip_aug": "yes"}, {}, r"general\.flip_aug: expected true or false, got 'yes'"),
    ({}, {"enable_bucket": 1}, r"datasets\[0\]\.enable_bucket: expected true or false, got 1"),
])
def test_bad_dataset_toml_values_are_named_by_dry_run(general, dataset, expected, tmp_path: Path, capsys) -> None:
    images = tmp_path / "krnk girl_f0064"
    write_images(images, 1)
    toml = write_toml(tmp_path / "d.toml", general, [{"resolution": 64, **dataset, "subsets": [{"image_dir": str(images)}]}])
    before = tree(tmp_path)
    code, line = cli(["train", str(toml), *ARGS, "--out", "x", "--dry-run"], capsys)
    assert code == 2 and str(toml) in line
    import re

    assert re.search(expected, line), line
    assert tree(tmp_path) == before
    with pytest.raises(CharframeError, match=expected):
        load_dataset(toml)


def test_dry_run_of_a_good_dataset_prints_the_plan(tmp_path: Path, capsys) -> None:
    toml = charframe_dataset(tmp_path, n=1, repeats=1, batch=1)
    assert main(["train", str(toml), *ARGS, "--out", "x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[plan.network]" in out and "[plan.io]" in out and 'out = "x"' in out


# --- point 11: clip skip, SIGTERM, kohya leftovers, corrupt states ---------------------------------


def test_clip_skip_beyond_the_text_encoder_is_refused(tmp_path: Path, capsys) -> None:
    toml = charframe_dataset(tmp_path, n=1, repeats=1, batch=1)
    code, line = cli(["train", str(toml), *ARGS, "--out", "x", "--clip-skip", "13"], capsys)
    assert code == 2 and line.endswith("--clip-skip 13 is beyond the text encoder's 4 layers; use 1..4 (2 for most anime models)")
    assert not list((tmp_path / "LoRAOutput").rglob("*.safetensors"))
    code, line = cli(["train", str(toml), *ARGS, "--out", "x", "--clip-skip", "0"], capsys)
    assert code == 2 and "recipe.clip_skip: expected an integer ≥ 1, got 0" in line


def test_sigterm_saves_the_state_like_ctrl_c(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 4)

    def terminate(step: int, loss: float) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what docker stop / a scheduler sends

    with pytest.raises(TrainingInterrupted, match="interrupted at step 2/4") as info:
        train(plan, components=build_tiny_sd(), on_step=terminate)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed again
    run, _, optim = load_state(find_state(plan.io, plan.output_name))
    assert run.step == 2 and optim["optimizer"]["state"]
    assert train(plan, components=build_tiny_sd(), resume=True).steps_done == 4


def test_failed_kohya_run_leaves_no_plan_file(tmp_path: Path) -> None:
    d = tmp_path / "sd-scripts"
    d.mkdir()
    (d / "train_network.py").write_text("pass\n")
    plan = _plan(tmp_path, 2, model=str(tmp_path / "m.safetensors"))
    engine = kohya.KohyaEngine(kohya.KohyaSetup(d, Path(sys.executable)),
                               runner=lambda cmd, cwd: SimpleNamespace(returncode=3))
    with pytest.raises(CharframeError, match="sd-scripts failed \\(exit code 3\\)"):
        train_with(plan, engine)
    assert not list((tmp_path / "LoRAOutput").rglob("*.train.toml"))
    with pytest.raises(CharframeError, match="resume works with the built-in engine"):
        train_with(plan, engine, resume=True)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    plan = _plan(root, 3)

    def stop(step: int, loss: float) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(plan, components=build_tiny_sd(), on_step=stop)
    return plan, find_state(plan.io, plan.output_name)


@pytest.mark.parametrize("name,damage", [
    ("network.safetensors", lambda b: b[:40]),
    ("optimizer.pt", lambda b: b"not a torch file"),
    ("state.toml", lambda b: b"step = [\n"),
    ("state.toml", lambda b: b'[state]\nstep = 1\n'),
])
def test_resume_from_a_corrupt_state_names_the_file(name, damage, interrupted, capsys) -> None:
    plan, state = interrupted
    path = state / name
    original = path.read_bytes()
    path.write_bytes(damage(original))
    try:
        with pytest.raises(CharframeError) as info:
            train(plan, components=build_tiny_sd(), resume=True)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "delete that folder to start the run over" in message
        assert "\n" not in message
    finally:
        path.write_bytes(original)
