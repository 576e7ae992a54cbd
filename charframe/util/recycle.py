"""Files a step no longer wants go to a recoverable place, never straight to nothing.

When a step replaces or drops an output it made earlier (a candidate regenerated with a new prompt, the images
of an export size that was removed, a LoRA retrained over), the old file is moved — not deleted — into

    <bin>/<YYYYmmdd-HHMMSS>[-n]/<its path relative to the project root>

(`LoRAWork/replaced/` in a project), one folder per run, so "what did charframe take away?" has an answer and a
file can be put back by moving it. The oldest run folders beyond `keep` are removed when a new one is made.
A move on the same file system costs nothing; across file systems it is a copy (shutil.move).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from charframe.util.files import new_stamped_folder

log = logging.getLogger(__name__)

#: run folders kept in the bin (the oldest beyond this are deleted when a new one starts)
KEEP = 20


class Recycler:
    """Moves files under `root` into `<bin>/<stamp>/<relative path>`; one stamp folder per instance (per run)."""

    def __init__(self, root: str | os.PathLike, bin_dir: str | os.PathLike, keep: int = KEEP) -> None:
        self.root = Path(root).absolute()
        self.bin = Path(bin_dir).absolute()
        self.keep = keep
        self._folder: Path | None = None
        self.moved: list[tuple[Path, Path]] = []

    def folder(self) -> Path:
        """This run's folder in the bin, made on first use (and older runs beyond `keep` pruned then)."""
        if self._folder is None:
            self._folder = new_stamped_folder(self.bin)
            self._prune()
        return self._folder

    def recycle(self, path: str | os.PathLike) -> Path | None:
        """Move `path` (a file or folder) into this run's folder; returns where it went (None if it was gone)."""
        path = Path(path).absolute()
        if not os.path.lexists(path):
            return None
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path(*path.parts[1:])  # outside the project: keep its absolute layout
        dest = self.folder() / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest))
        self.moved.append((path, dest))
        return dest

    def _prune(self) -> None:
        runs = sorted(p for p in self.bin.iterdir() if p.is_dir())
        for old in runs[: max(0, len(runs) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def summary(self) -> str:
        return f"{len(self.moved)} file(s) moved to {self._folder}" if self._folder else ""


def remove_empty_dirs(folder: str | os.PathLike, stop: str | os.PathLike) -> None:
    """Remove `folder` and its parents while they are empty, up to (not including) `stop`."""
    folder, stop = Path(folder).absolute(), Path(stop).absolute()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
