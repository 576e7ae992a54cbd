"""Where a charframe project lives: its root folder, its `charframe.toml`, and its standard folders.

A project is the folder that holds `LoRAInput/` (and usually `FaceTemplate/`, `BodyTemplate/`,
`LoRAOutput/`, `LoRALog/`). Commands find it from the folder the user dropped or named, not from the
current directory, because a Windows drag-and-drop launcher starts in an arbitrary directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charframe.util import toml as tomlio
from charframe.errors import CharframeError

PROJECT_FILE = "charframe.toml"

#: Standard folder names (CONVENTIONS §1), keyed by the names used in `[paths]` of charframe.toml.
DEFAULT_DIRS: dict[str, str] = {
    "input": "LoRAInput",
    "output": "LoRAOutput",
    "log": "LoRALog",
    "face_templates": "FaceTemplate",
    "body_templates": "BodyTemplate",
}


@dataclass(frozen=True)
class ProjectDirs:
    """Absolute standard folders of one project (they need not exist yet)."""

    root: Path
    input: Path
    output: Path
    log: Path
    face_templates: Path
    body_templates: Path


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """Nearest ancestor of `start` (itself included) holding `charframe.toml` or `LoRAInput/`.

    Falls back to the current directory when no ancestor qualifies, so a bare folder still works.
    """
    here = Path(start if start is not None else Path.cwd()).absolute()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / PROJECT_FILE).is_file() or (candidate / DEFAULT_DIRS["input"]).is_dir():
            return candidate
    return Path.cwd().absolute()


def load_project_config(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed `charframe.toml` of `root`, or `{}` when there is none."""
    path = Path(root) / PROJECT_FILE
    if not path.is_file():
        return {}
    return tomlio.load(path)


def project_dirs(root: str | os.PathLike, config: dict[str, Any] | None = None) -> ProjectDirs:
    """Standard folders of the project at `root`; `[paths]` in charframe.toml may rename them.

    Example `charframe.toml`: ``[paths]`` ``output = "D:/loras"`` (relative paths are from the root).
    """
    root = Path(root).absolute()
    if config is None:
        config = load_project_config(root)
    paths = config.get("paths", {})
    if not isinstance(paths, dict):
        raise CharframeError(f"{root / PROJECT_FILE}: [paths] must be a table of folder names")
    unknown = sorted(set(paths) - set(DEFAULT_DIRS))
    if unknown:
        raise CharframeError(
            f"{root / PROJECT_FILE}: unknown key(s) in [paths]: {', '.join(unknown)}; "
            f"known: {', '.join(DEFAULT_DIRS)}"
        )
    resolved = {key: root / str(paths.get(key, default)) for key, default in DEFAULT_DIRS.items()}
    return ProjectDirs(root=root, **resolved)
