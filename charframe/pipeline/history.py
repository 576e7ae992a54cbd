"""Finished LoRAs are versioned: a retrain never destroys the LoRA a user liked.

Before a stage's LoRA, merge or compression is replaced, its whole finished set — the LoRA, its saved plan
(`.train.toml`), its step checkpoints and score file, the merged and compressed files, the preview grid and the
report — and the step records that describe it go to

    LoRAOutput/<out>/history/<YYYYmmdd-HHMMSS>/

as hard links where the file system allows (no extra space: every charframe writer replaces a file by renaming
a new one over it, so the old inode stays intact in the history) and as copies elsewhere. The newest `keep`
versions are kept (`[history] keep` in charframe.toml, default 5). `versions` lists them; `restore` puts one
back — the current set is archived first, so a restore can itself be undone — together with its step records,
so a rerun sees the restored files as the pipeline's own (and retrains only if the inputs have changed since).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from charframe.errors import CharframeError
from charframe.pipeline.score_file import report_path, score_path
from charframe.project import load_project
from charframe.training.checkpoints import checkpoints
from charframe.util.files import atomic_write_text, new_stamped_folder
from charframe.util.manifest import Manifest

if TYPE_CHECKING:
    from charframe.pipeline.stages import StageJob

log = logging.getLogger(__name__)

HISTORY = "history"
RECORD = "version.json"
#: the steps whose records travel with a version
VERSIONED_STEPS = ("train", "score", "merge", "compress", "preview")


@dataclass(frozen=True)
class Version:
    name: str              # the time stamp folder name
    folder: Path
    files: tuple[Path, ...]
    stage: str

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def set_files(job: "StageJob") -> list[Path]:
    """The files of a stage's finished set (existing or not)."""
    plan = job.lora.with_name(job.lora.stem + ".train.toml")
    steps = [p for _, p in checkpoints(job.lora)]
    return [job.lora, plan, *steps, score_path(job), job.merged, job.compressed, job.preview, report_path(job)]


def history_dir(job: "StageJob") -> Path:
    return job.lora.parent / HISTORY


def keep_count(root: Path) -> int:
    return load_project(root).history.keep


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def recorded_files(job: "StageJob", records: Manifest) -> list[Path]:
    """The files of the stage's finished set as the step records name them (a retrain under another recipe
    writes other names), with the LoRA's saved plan; then the planned names, for sets made before records."""
    found: dict[Path, None] = {}
    for step in VERSIONED_STEPS:
        entry = records.outputs.get(f"{job.name}.{step}") or {}
        for key in entry.get("files") or {}:
            path = Path(key) if Path(key).is_absolute() else job.root / key
            found[path] = None
            if step == "train":
                found[path.with_name(path.stem + ".train.toml")] = None
    for path in set_files(job):
        found[path] = None
    return [p for p in found if p.is_file() and p.parent == job.lora.parent]


def archive(job: "StageJob", records: Manifest) -> Path | None:
    """Keep the stage's current finished set (if it has a LoRA) as a new version; returns its folder. Files the
    current plan writes again under the same name are linked (they are replaced by renaming); files of another
    recipe's names move into the version, so LoRAOutput/<out>/ holds only the current set."""
    files = recorded_files(job, records)
    if not any(f.suffix == ".safetensors" for f in files):
        return None
    planned = set(set_files(job))
    folder = new_stamped_folder(history_dir(job))
    for f in files:
        if f in planned:
            _link_or_copy(f, folder / f.name)
        else:
            shutil.move(str(f), str(folder / f.name))
    entries = {step: records.outputs[f"{job.name}.{step}"] for step in VERSIONED_STEPS
               if f"{job.name}.{step}" in records.outputs}
    atomic_write_text(folder / RECORD, json.dumps({"stage": job.name, "out": job.out, "records": entries}, indent=1))
    prune(history_dir(job), keep_count(job.root))
    return folder


def prune(base: Path, keep: int) -> list[Path]:
    """Remove the oldest versions beyond `keep`; returns the removed folders."""
    old = [v.folder for v in _scan(base)][:-keep] if keep > 0 else []
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)
    return old


def _scan(base: Path) -> list[Version]:
    if not base.is_dir():
        return []
    found = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        try:
            stage = str(json.loads((folder / RECORD).read_text(encoding="utf-8")).get("stage", ""))
        except (OSError, ValueError, AttributeError):
            stage = ""
        files = tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.name != RECORD))
        found.append(Version(folder.name, folder, files, stage))
    return found


def versions(job: "StageJob") -> list[Version]:
    """The kept versions of a stage, oldest first."""
    return [v for v in _scan(history_dir(job)) if v.stage in ("", job.name)]


def previous_lora(job: "StageJob") -> Path | None:
    """The LoRA of the newest kept version (the preview grid draws it as a row beside the current one): the
    version's shortest-named .safetensors (the merge and compression add `-FACE`, `-SvR16` to its name)."""
    for v in reversed(versions(job)):
        loras = sorted((f for f in v.files if f.suffix == ".safetensors"), key=lambda f: len(f.stem))
        if loras:
            return loras[0]
    return None


def restore(job: "StageJob", name: str, records: Manifest) -> Path:
    """Put version `name` back as the stage's current set (the current one is archived first); its step records
    come back with it. Returns the archive of the set it replaced (or the version folder when there was none)."""
    chosen = next((v for v in versions(job) if v.name == name), None)
    if chosen is None:
        known = ", ".join(v.name for v in versions(job)) or "none"
        raise CharframeError(f"{history_dir(job)}: no version {name!r} of {job.out} ({job.name}); kept: {known}")
    data = json.loads((chosen.folder / RECORD).read_text(encoding="utf-8")) if (chosen.folder / RECORD).is_file() else {}
    current = archive(job, records)
    for f in set_files(job):
        if f.is_file():
            f.unlink()
    for f in chosen.files:
        dest = job.lora.parent / f.name
        _link_or_copy(f, dest)
    for step in VERSIONED_STEPS:
        records.forget(f"{job.name}.{step}")
    for step, entry in (data.get("records") or {}).items():
        records.outputs[f"{job.name}.{step}"] = entry
    records.dirty = True
    records.save()
    return current or chosen.folder
