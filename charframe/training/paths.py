"""Where a training job's inputs are: the dataset TOML of a folder, and the old batch file's names.

`charframe train-bat LOGIC DIM LR STEPS IN OUT MODEL VAE CLIPSKIP [LORA]` keeps the original batch
file's habits: IN is a dataset folder name under `LoRAInput/` (its TOML is `IN/IN.toml`), OUT a name
under `LoRAOutput/`, MODEL and VAE file names under `LoRAInput/`; LORA (continue from) is looked up
under `LoRAOutput/OUT/`, `LoRAOutput/`, the other `LoRAOutput/*/` folders and `LoRAInput/`
(`.safetensors` may be left out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from charframe.errors import CharframeError
from charframe.project import ProjectDirs, find_project_root, project_dirs

NO_VAE = ("", "-", "none", "None")


def resolve_dataset(path: str | os.PathLike) -> Path:
    """A dataset TOML from a `.toml` path or a dataset folder (`LoRAInput/4_krnk` → `4_krnk/4_krnk.toml`)."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".toml":
            raise CharframeError(f"{p}: not a dataset TOML; pass the dataset folder or its .toml file")
        return p.absolute()
    if p.is_dir():
        toml = p / f"{p.absolute().name}.toml"
        if toml.is_file():
            return toml.absolute()
        raise CharframeError(f"{toml}: no dataset TOML in {p}; run `charframe prepare \"{p}\"` first")
    raise CharframeError(f"{p}: no such dataset folder or TOML")


def job_dirs(start: str | os.PathLike | None = None) -> ProjectDirs:
    """The project's LoRAInput/, LoRAOutput/ and LoRALog/ (charframe.toml [paths] honoured)."""
    return project_dirs(find_project_root(start))


def _existing(name: str, folders: list[Path], what: str, suffixes: tuple[str, ...] = ()) -> Path:
    p = Path(name).expanduser()
    tries = [p] if p.is_absolute() else [f / p for f in folders]
    tries += [t.with_name(t.name + s) for t in list(tries) for s in suffixes if not t.name.endswith(s)]
    for t in tries:
        if t.exists():
            return t.absolute()
    raise CharframeError(f"{what} {name!r} not found (looked for {', '.join(str(t) for t in tries)})")


@dataclass(frozen=True)
class BatJob:
    dataset: Path
    out: str
    model: Path
    vae: Path | None
    continue_from: Path | None
    output_dir: Path
    logging_dir: Path


def resolve_bat(in_name: str, out_name: str, model: str, vae: str, lora: str | None, dirs: ProjectDirs) -> BatJob:
    """The old batch file's positional names, resolved the way it resolved them."""
    dataset = resolve_dataset(_existing(in_name, [dirs.input], "dataset"))
    model_path = _existing(model, [dirs.input], "model")
    vae_path = None if vae in NO_VAE else _existing(vae, [dirs.input], "VAE")
    lora_path = None
    if lora:
        folders = [dirs.output / out_name, dirs.output, *sorted(p for p in dirs.output.glob("*") if p.is_dir()), dirs.input]
        lora_path = _existing(lora, folders, "LoRA to continue from", (".safetensors",))
    return BatJob(dataset, out_name, model_path, vae_path, lora_path, dirs.output, dirs.log)
