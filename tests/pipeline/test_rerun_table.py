"""What reruns after each kind of edit: the table the README prints (Real use, step 5, "Change a rule, rerun
what changed"), checked on the real steps and tiny models.

Each row edits a copy of the built two-character + group project the way a user would, runs `rerun --all`
and asserts exactly which steps ran (and, where it matters, which files changed). `python
tests/pipeline/test_rerun_table.py` prints the table; the README's table must hold the same rows
(`test_the_readme_states_this_table`)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # when run as a script

from charframe.pipeline.runner import Options, all_targets, rerun
from charframe.util.manifest import digest_file
from project_builder import REPO, STEPS_ALL, copy_project
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

KF, KB = ("krnk.toml", "face"), ("krnk.toml", "body-sf")
TF, TB = ("tyank.toml", "face"), ("tyank.toml", "body-kps")
G = ("pair.group.toml", "group")
FROM_EXPORT = STEPS_ALL[3:]
AFTER_PREPARE = STEPS_ALL[5:]


def steps(stage: tuple[str, str], names) -> set[tuple[str, str, str]]:
    return {(*stage, s) for s in names}


@dataclass(frozen=True)
class Edit:
    label: str                          # the README row: what the user changes
    runs: str                           # the README row: what runs again
    change: Callable[[Path], dict | None]  # may return more "before" values for `check`
    expected: set[tuple[str, str, str]]
    check: Callable[[Path, dict], None] = field(default=lambda root, before: None)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _replace(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _repaint(path: Path) -> None:
    img = np.asarray(Image.open(path)).copy()
    img[:16, :16] = 255  # a visible retouch: it reaches the LoRA
    Image.fromarray(img).save(path)


def _flip_auto_pick(root: Path) -> None:
    picks = root / "LoRAWork" / "krnk" / "face" / "picks.toml"
    text = picks.read_text(encoding="utf-8")
    now = int(re.search(r"^f00 = (\d)$", text, re.M)[1])
    picks.write_text(re.sub(r"^f00 = \d$", f"f00 = {1 - now}", text, count=1, flags=re.M), encoding="utf-8")


def _redraw_map(root: Path) -> None:
    path = root / "BodyTemplate" / "control" / "softedge" / "b12.png"
    img = np.asarray(Image.open(path)).copy()
    h, w = img.shape[:2]
    img[h // 4: h // 2, w // 4: 3 * w // 4] = 255  # a new white stroke across the figure
    Image.fromarray(img).save(path)


def _only_b12_regenerated(root: Path, before: dict) -> None:
    raw = root / "LoRAWork" / "krnk" / "body-sf" / "raw"
    changed = sorted(p.name for p in raw.glob("*.png") if digest_file(p) != before[p.name])
    assert changed == ["b12-0.png", "b12-1.png"]  # krnk makes two candidates per code


def _hand_pick_kept(root: Path, before: dict) -> None:
    text = (root / "LoRAWork" / "krnk" / "face" / "picks.toml").read_text(encoding="utf-8")
    assert re.search(r"\[pinned\]\nf00 = \d\n", text)


def _raw_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): digest_file(p) for p in (root / "LoRAWork" / "krnk").glob("*/raw/*.png")}


def _pick_then_sizes(root: Path) -> dict:
    """A hand pick first (settled by a rerun), then an export size dropped: returns the candidates' digests."""
    _flip_auto_pick(root)
    assert not rerun(all_targets(root), Options(progress=False)).failed
    _replace(root / "Characters" / "krnk.toml", "sizes = [64, 128]", "sizes = [64]")
    return {"raw": _raw_digests(root)}


def _sizes_followed(root: Path, before: dict) -> None:
    body = root / "LoRAInput" / "2_krnksf_krnk"
    assert sorted(p.name for p in body.iterdir() if p.is_dir()) == ["krnk girl_f0064"]  # the b0128 subset left
    assert "krnksf girl_b0128" not in (body / "2_krnksf_krnk.toml").read_text()
    assert _raw_digests(root) == before["raw"]  # nothing regenerated
    _hand_pick_kept(root, before)


def _deletion_honoured(root: Path, before: dict) -> None:
    assert not (root / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f02.png").exists()


def _same_lora_again(root: Path, before: dict) -> None:
    out = root / "LoRAOutput" / "tyank" / "tyank-Lora1x1A1-AdamW8-2-100-6-FACE-SvR16.safetensors"
    assert digest_file(out) == before["compressed"]


EDITS: tuple[Edit, ...] = (
    Edit("nothing", "nothing (50 characters decide that in under a second)", lambda root: None, set()),
    Edit("a character's prompt, negative, generation settings, model, VAE or ControlNet",
         "its face set from generate on (every candidate), then its body sets (made with the new face LoRA) and "
         "the groups it is in, from export on",
         lambda root: _replace(root / "Characters" / "krnk.toml", '"1girl, krnk"', '"1girl, krnk, red eyes"'),
         steps(KF, STEPS_ALL) | steps(KB, STEPS_ALL) | steps(G, FROM_EXPORT)),
    Edit("a template's control map (one code)",
         "generate makes only that code's candidates again; what follows reruns only where content changed",
         lambda root: _redraw_map(root),
         steps(KB, STEPS_ALL) | steps(TB, STEPS_ALL) | steps(G, FROM_EXPORT), _only_b12_regenerated),
    Edit("a caption rule in charframe.toml", "prepare everywhere; train (score, merge, compress, preview) only where "
         "captions really changed: here a body-only rule retrains the 2 body LoRAs and the group, not the faces",
         lambda root: _append(root / "charframe.toml", '[[captions.rule]]\nname = "outfit"\nkind = "b"\ntags = ["outfit focus"]\n'),
         steps(KF, ["prepare"]) | steps(KB, STEPS_ALL[4:]) | steps(TF, ["prepare"]) | steps(TB, STEPS_ALL[4:])
         | steps(G, STEPS_ALL[4:])),
    Edit("export sizes (`[export] sizes`)", "export (the dataset follows: a size removed leaves it) and what "
         "trains on the changed datasets; no generate, clean or pick, hand picks kept",
         lambda root: _pick_then_sizes(root),
         steps(KF, ["export"]) | steps(KB, FROM_EXPORT) | steps(G, FROM_EXPORT), _sizes_followed),
    Edit("a pick in picks.toml (pinned from then on)", "pick (keeps it, redraws the sheet), export of that code, and "
         "everything that trains on it; the body sets regenerate with the new face LoRA",
         _flip_auto_pick,
         steps(KF, STEPS_ALL[2:]) | steps(KB, STEPS_ALL) | steps(G, FROM_EXPORT), _hand_pick_kept),
    Edit("a dataset image retouched by hand", "prepare and train onwards for that dataset (the retouch is kept, "
         "never exported over); for a face set, the body sets and groups follow",
         lambda root: _repaint(root / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f02.png"),
         steps(TF, STEPS_ALL[4:]) | steps(TB, STEPS_ALL) | steps(G, FROM_EXPORT)),
    Edit("a dataset image deleted by hand", "the same as a retouch; the image stays deleted (list the code in "
         "`[export] exclude` to make that permanent)",
         lambda root: (root / "LoRAInput" / "4_tyank" / "tyank girl_f0064" / "f02.png").unlink(),
         steps(TF, STEPS_ALL[4:]) | steps(TB, STEPS_ALL) | steps(G, FROM_EXPORT), _deletion_honoured),
    Edit("a stage's recipe (`[training.face]` steps, lr, dim, logic)", "train, score, merge, compress, preview of that "
         "stage; for the face stage, the body sets and groups follow",
         lambda root: _replace(root / "Characters" / "krnk.toml", "lr = 100", "lr = 200"),
         steps(KF, AFTER_PREPARE) | steps(KB, STEPS_ALL) | steps(G, FROM_EXPORT)),
    Edit("a stage's merge preset or sv_ratio", "merge (or compress) and what follows of that stage",
         lambda root: _replace(root / "Characters" / "krnk.toml", "[training.body]\n", '[training.body]\npreset = "FACE"\n'),
         steps(KB, ["merge", "compress", "preview"])),
    Edit("`[preview]` scenes, seeds or size", "preview, in every stage",
         lambda root: _replace(root / "charframe.toml", "in a forest", "at the beach"),
         steps(KF, ["preview"]) | steps(KB, ["preview"]) | steps(TF, ["preview"]) | steps(TB, ["preview"])
         | steps(G, ["preview"])),
    Edit("an output damaged or deleted (a truncated LoRA)", "the step that made it; nothing after it when it comes "
         "out the same",
         lambda root: (lambda p: p.write_bytes(p.read_bytes()[:1000]))(
             root / "LoRAOutput" / "tyank" / "tyank-Lora1x1A1-AdamW8-2-100-6-FACE-SvR16.safetensors"),
         steps(TF, ["compress"]), _same_lora_again),
)


def _fingerprints(root: Path) -> dict:
    raw = root / "LoRAWork" / "krnk" / "body-sf" / "raw"
    out = {p.name: digest_file(p) for p in raw.glob("*.png")}
    out["compressed"] = digest_file(root / "LoRAOutput" / "tyank" / "tyank-Lora1x1A1-AdamW8-2-100-6-FACE-SvR16.safetensors")
    return out


@pytest.fixture(scope="module")
def settled(built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the built project whose dataset TOMLs already point at it (see test_run's `project`)."""
    root = copy_project(built[0], tmp_path_factory.mktemp("table") / "settled")
    assert not rerun(all_targets(root), Options(progress=False)).failed
    return root


@pytest.mark.parametrize("edit", EDITS, ids=[e.label[:40] for e in EDITS])
def test_an_edit_reruns_exactly_its_row(edit: Edit, settled: Path, tmp_path: Path) -> None:
    root = copy_project(settled, tmp_path / "proj")
    rerun(all_targets(root), Options(progress=False))  # a copy's first rerun only rewrites its TOMLs' paths
    before = _fingerprints(root)
    more = edit.change(root)
    before |= more if isinstance(more, dict) else {}
    report = rerun(all_targets(root), Options(progress=False))
    assert not report.failed, [(r.stage, r.step, r.message) for r in report.failed]
    ran = {(r.target, r.stage, r.step) for r in report.results if r.status == "ran"}
    assert ran == edit.expected, (sorted(ran - edit.expected), sorted(edit.expected - ran))
    edit.check(root, before)
    again = rerun(all_targets(root), Options(progress=False))
    assert not again.ran, [(r.stage, r.step) for r in again.ran]  # and then it is all up to date


def readme_table() -> str:
    rows = [f"| {e.label} | {e.runs} |" for e in EDITS]
    return "\n".join(["| You change | What runs again |", "| --- | --- |", *rows])


def test_the_readme_states_this_table() -> None:
    readme = "\n".join(line.strip() for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert readme_table() in readme, "README (Real use, step 5) must hold this table exactly:\n" + readme_table()


if __name__ == "__main__":
    print(readme_table())
    sys.exit(0)
