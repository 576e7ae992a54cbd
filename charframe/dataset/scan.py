"""Finding image folders: one directory walk shared by tagging and the dataset TOML.

One `os.scandir` per folder gives both the images and the names of the files beside them (so
tagging knows which `.txt` exist without a `stat` per image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from charframe.errors import CharframeError
from charframe.dataset.naming import is_image_name


@dataclass(frozen=True)
class ImageFolder:
    """A folder that holds images: its path, its image names (sorted), and all its file names."""

    path: Path
    images: tuple[str, ...]
    files: frozenset[str]


def require_dirs(paths: list[str | os.PathLike]) -> list[Path]:
    """Every path must be an existing folder: checked for all before anything is written."""
    if not paths:
        raise CharframeError("no folder given; name one or more dataset folders, e.g. LoRAInput/4_krnk")
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise CharframeError(f"{path}: no such folder")
        if not path.is_dir():
            raise CharframeError(f"{path}: is a file, but a folder is expected (drop the dataset folder, not an image)")
        out.append(path)
    return out


def check_utf8_name(folder: Path) -> None:
    """A folder of images must have a UTF-8 name: it becomes caption tags and the dataset TOML's `image_dir`
    and `class_tokens`, which are UTF-8 text (a name in another encoding reads as undecodable bytes here)."""
    try:
        os.fspath(folder).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(folder).decode("utf-8", "backslashreplace")
        raise CharframeError(f"{shown}: the folder's name is not valid UTF-8 text (the \\x.. bytes); captions and the "
                             "dataset TOML are UTF-8: rename the folder") from None


def image_folders(root: str | os.PathLike) -> list[ImageFolder]:
    """Every folder at or below `root` holding images, sorted by path; hidden folders are skipped."""
    found: list[ImageFolder] = []
    seen: set[tuple[int, int]] = set()
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            raise CharframeError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
        files = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append(Path(entry.path))
            else:
                files.append(entry.name)
        images = tuple(sorted(n for n in files if is_image_name(n)))
        if images:
            check_utf8_name(folder)
            found.append(ImageFolder(folder, images, frozenset(files)))
    found.sort(key=lambda f: f.path.parts)
    return found
