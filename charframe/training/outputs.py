"""Where a run writes, checked before step 1, and the final save that never loses the trained weights.

`<output_dir>/<out>/<out>-<logic>-<dim>-<lr>-<steps>.safetensors`, its `.train.toml`, its `-state/` folder,
the `sample/` images and `<logging_dir>/<name><time>/`: every folder must be creatable and writable and
every name (temporary ones included) must fit the file system's limit, else the run is refused before any
model is loaded, not after hours of training. If the final write still fails (disk full, a folder removed
meanwhile), the weights go to a short name in the output folder or the temp folder, the resumable state
is kept, and the message says where both are.

What a finished LoRA was made from is recorded with the same manifest as captions and templates
(`util.manifest`, `<output_dir>/<out>/.charframe-train.json`): its inputs (the dataset TOML, every image and
caption it trains on, the model, VAE and continued LoRA when they are files) and its parameters (the plan,
less what changes only speed, samples or state saving). `output_status` answers "is this LoRA still what
this plan would train?" without loading a model; `charframe train --dry-run` prints it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from charframe.errors import CharframeError
from charframe.lora.io import save_lora_file
from charframe.util.files import check_confined, confine_writes, name_max
from charframe.training import state as st
from charframe.training.checkpoints import checkpoint_path, checkpoints  # noqa: F401 (re-exported)
from charframe.training.data import DatasetGroup, load_dataset
from charframe.training.plan import TrainIO, TrainPlan
from charframe.util.manifest import Manifest, Status, digest_file

log = logging.getLogger(__name__)

#: What `charframe.util.files.atomic_path` adds to a name for its temporary file (".", ".", 8 random, ".tmp").
TEMP_NAME_EXTRA = 14
LOG_STAMP = "%Y%m%d%H%M%S"  # the log folder is `<name><stamp>`
_LOG_STAMP_LEN = 14
_SAMPLE_SUFFIX_LEN = len("_000000_00_0000000000.png")


def output_paths(io: TrainIO, output_name: str) -> tuple[Path, Path]:
    """(planned LoRA file, its state folder): `<output_dir>/<out>/<output_name>.safetensors`."""
    out = Path(io.output_dir) / io.out / f"{output_name}.{io.save_model_as}"
    return out, st.state_dir_for(out)


def plan_path_for(output: Path) -> Path:
    """The plan saved beside a LoRA: `<stem>.train.toml`."""
    return output.with_name(output.stem + ".train.toml")


TRAIN_MANIFEST = ".charframe-train.json"
#: plan sections that do not change the trained weights (speed, sample images, state saving)
_NOT_IN_RESULT = ("runtime", "sampling", "state")


def trained_from(plan: TrainPlan, group: DatasetGroup | None = None) -> tuple[list[Path], dict[str, Any]]:
    """(input files, parameters) that determine the LoRA `plan` trains; reads the dataset TOML (no model) unless
    the run's already loaded `group` is given."""
    group = group or load_dataset(plan.io.dataset)
    files = [Path(plan.io.dataset).absolute()]
    for d in group.datasets:
        extensions = [sub.caption_extension for sub in d.subsets]
        for e in d.images:
            files.append(e.path)
            caption = e.path.with_suffix(extensions[e.subset])
            if caption.is_file():
                files.append(caption)
    files += [Path(p) for p in (plan.io.model, plan.io.vae, plan.io.continue_from, *plan.pivotal.reuse)
              if p and Path(p).is_file()]
    params = {k: v for k, v in plan.to_dict().items() if k not in _NOT_IN_RESULT}
    params["io"] = {k: v for k, v in params["io"].items() if k not in ("output_dir", "logging_dir")}
    return sorted(set(files)), params


def record_output(plan: TrainPlan, out_file: Path, group: DatasetGroup | None = None) -> None:
    """Remember what the LoRA just written to `out_file` was trained from (see the module doc). The LoRA is
    already saved: a failure here (a dataset file removed during training) is a warning, never a lost run."""
    try:
        inputs, params = trained_from(plan, group)
        manifest = Manifest.load(out_file.parent / TRAIN_MANIFEST)
        manifest.record(out_file.name, inputs=inputs, params=params)
        manifest.forget_missing()
        manifest.save()
    except (OSError, CharframeError) as e:
        log.warning("%s: saved, but what it was trained from is not recorded (%s); a dry run will call it stale",
                    out_file, e)


def output_status(plan: TrainPlan) -> tuple[Path, Status]:
    """The LoRA file `plan` writes and whether it is up to date with the plan's dataset, model and settings."""
    out_file, _ = output_paths(plan.io, plan.output_name)
    inputs, params = trained_from(plan)
    return out_file, Manifest.load(out_file.parent / TRAIN_MANIFEST).status(out_file.name, inputs=inputs, params=params)


def inputs_digest(plan: TrainPlan, group: DatasetGroup | None = None) -> str:
    """A digest of what `plan` trains on: every dataset file's content (named relative to the dataset TOML, so a
    moved project keeps its states) and the model/VAE/continued LoRA by name, size and mtime (hashing gigabytes
    at every start would cost seconds; a different model with the same size and time stamp is not a real case)."""
    files, _ = trained_from(plan, group)
    base = Path(plan.io.dataset).absolute().parent
    h = hashlib.blake2b(digest_size=8)
    for f in files:
        try:
            rel = f.absolute().relative_to(base).as_posix()
            h.update(f"{rel}\0{digest_file(f)}\n".encode("utf-8", "surrogatepass"))
        except ValueError:
            stat = f.stat()
            h.update(f"{f.name}\0{stat.st_size}:{stat.st_mtime_ns}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def state_mismatch(plan: TrainPlan, state_dir: Path) -> str | None:
    """Why the saved state in `state_dir` must not be continued by `plan` (other settings, or another dataset,
    captions or model than it was saved from), or None when it may."""
    run = st.read_run(state_dir)
    if run is None:
        return "its state.toml is unreadable"
    try:
        st.check_resumable(plan, run, state_dir)
    except CharframeError:
        return "the recipe changed since it was saved"
    if run.inputs and run.inputs != inputs_digest(plan):
        return f"the dataset, captions or model changed since it was saved at step {run.step}"
    return None


def find_state(io: TrainIO, output_name: str) -> Path | None:
    """The newest complete state folder of this output name, if any."""
    out, _ = output_paths(io, output_name)
    if not out.parent.is_dir():
        return None
    found = [p for p in out.parent.glob(f"{output_name}*-state") if (p / st.STATE_FILE).is_file()]
    return max(found, key=lambda p: (p / st.STATE_FILE).stat().st_mtime) if found else None


def check_folder(folder: Path, param: str) -> Path:
    """`folder` exists as a writable folder or can be created (and, inside `confine_writes`, really lies in the
    project): returns its nearest existing ancestor."""
    check_confined(folder)
    existing = folder.absolute()
    missing: list[str] = []
    while not existing.exists():
        missing.append(existing.name)
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise CharframeError(f"{existing}: is a file, not a folder; choose another {{param}}", param=param)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CharframeError(f"{existing}: folder is not writable; choose another {{param}}", param=param)
    limit = name_max(existing)
    for name in missing:
        if len(os.fsencode(name)) > limit:
            raise CharframeError(f"{folder}: the folder name is {len(os.fsencode(name))} bytes, over this file "
                                 f"system's limit of {limit}; choose a shorter {{param}}", param=param)
    return existing


def check_output_locations(io: TrainIO, output_file: Path, *, samples: bool) -> None:
    """Refuse, before any work, a run whose outputs cannot be written (see the module doc)."""
    out_dir = output_file.parent
    anchor = check_folder(out_dir, "out" if Path(io.output_dir).is_dir() else "output_dir")
    log_anchor = check_folder(Path(io.logging_dir), "logging_dir")
    stem = output_file.stem
    names = [output_file.name, plan_path_for(output_file).name, st.state_dir_for(output_file).name,
             checkpoint_path(output_file, 0).name]
    longest = max(len(os.fsencode(n)) for n in names) + TEMP_NAME_EXTRA
    if samples:
        longest = max(longest, len(os.fsencode(stem)) + _SAMPLE_SUFFIX_LEN + TEMP_NAME_EXTRA)
    limit = name_max(anchor)
    if longest > limit:
        raise CharframeError(f"{out_dir}: output files named {stem[:40]}… need {longest} bytes with their temporary "
                             f"names, over this file system's limit of {limit}; choose a shorter {{param}}", param="out")
    log_name = len(os.fsencode(stem)) + _LOG_STAMP_LEN
    if log_name > name_max(log_anchor):
        raise CharframeError(f"{io.logging_dir}: the log folder name would be {log_name} bytes, over this file "
                             f"system's limit; choose a shorter {{param}}", param="out")


def save_final(out_file: Path, tensors: dict[str, Any], metadata: dict[str, str], *, session_id: int,
               keep_state: Callable[[], Path | None]) -> None:
    """Write the LoRA; if that fails, write it to a fallback, keep the resumable state, and say where both are."""
    try:
        save_lora_file(out_file, tensors, metadata)
        return
    except Exception as exc:  # noqa: BLE001 - any failure here must not lose hours of training
        reason = getattr(exc, "strerror", None) or str(exc)
    try:
        state_dir = keep_state()
    except Exception as exc:  # noqa: BLE001 - the weights below matter more; report both
        log.error("could not save the resumable state either: %s", exc)
        state_dir = None
    fallback = _save_fallback(tensors, metadata, out_file.parent, session_id)
    kept = f"the resumable state is in {state_dir} (run the same command with {{param}} to retry the save)" \
        if state_dir else "no resumable state could be written"
    where = f"the trained weights are in {fallback}" if fallback else "the weights could not be written anywhere"
    raise CharframeError(f"{out_file}: cannot write the LoRA ({reason}); {where}; {kept}", exit_code=1,
                         param="resume" if state_dir else None)


def _save_fallback(tensors: dict[str, Any], metadata: dict[str, str], folder: Path, session_id: int) -> Path | None:
    name = f"charframe-{session_id}.safetensors"
    for candidate in (folder / name, Path(tempfile.gettempdir()) / name):
        try:
            # the rescue copy of hours of training may go to the temporary folder, outside the project
            with contextlib.nullcontext() if candidate.parent == folder else confine_writes(()):
                save_lora_file(candidate, tensors, metadata)
            return candidate
        except Exception:  # noqa: BLE001 - try the next place
            continue
    return None
