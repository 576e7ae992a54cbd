"""The files a pipeline step reads or writes, as globbed sets: `FileSet(root, patterns)`.

A step is downstream of another when one of its inputs overlaps one of the other's outputs (`overlaps`): how
the runner knows what a failed step blocks, and what a dry run cannot decide before the upstream step ran.
Listing is plain `os.scandir` and one regex per pattern set (no pathlib per file): a rerun of fifty characters
lists tens of thousands of files in a fraction of a second. Hidden files and folders never count.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

@dataclass(frozen=True)
class FileSet:
    """Files below `root` matching `patterns` (glob, `**` for any depth); no patterns = `root` itself is one file.

    Hidden files and folders (`.charframe-captions.json`, `.x.tmp`) never count: they are bookkeeping."""

    root: Path
    patterns: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        return [Path(p) for p in self.paths()]

    def paths(self) -> list[str]:
        """The files as path strings, sorted (os.scandir and one regex: no pathlib per file, for speed)."""
        root = str(self.root)
        if not self.patterns:
            return [root] if os.path.isfile(root) else []
        match = _matcher(self.patterns).match
        found: list[str] = []
        stack = [(root, "")]
        while stack:
            folder, rel = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                name = rel + e.name
                if e.is_dir():
                    stack.append((e.path, name + "/"))
                elif match(name) and e.is_file():
                    found.append(e.path)
        return sorted(found)

    def overlaps(self, other: "FileSet") -> bool:
        """Whether the two sets can share a file (one root at or below the other, same patterns or any). Plain
        string prefixes: a dry run of fifty characters asks this hundreds of thousands of times."""
        a, b = _key(self.root), _key(other.root)
        if not (a == b or a.startswith(b) or b.startswith(a)):
            return False
        if not self.patterns or not other.patterns or a != b:
            return True
        return bool(set(self.patterns) & set(other.patterns)) or any(
            _suffix(p) == _suffix(q) for p in self.patterns for q in other.patterns)


@functools.lru_cache(maxsize=65536)
def _key(root: Path) -> str:
    """The root as a string ending in the separator (so `a/b` is not a prefix of `a/bc`)."""
    return os.path.join(str(root), "")


@functools.lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for glob patterns over `/`-separated relative paths: `**/` any folders (or none), `*` and `?`
    within one name."""
    def one(p: str) -> str:
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:[^/]*/)*", i + 3
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return out
    return re.compile("(?:" + "|".join(one(p) for p in patterns) + r")\Z", re.IGNORECASE if os.name == "nt" else 0)


def _suffix(pattern: str) -> str:
    return Path(pattern).suffix.lower()


def params_text(params: Mapping[str, Any], base: Path | None = None) -> str:
    """Canonical JSON of a step's non-file inputs; paths below `base` (the project root) are written relative to
    it, so a moved or copied project keeps its records."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    if base is not None:
        text = text.replace(json.dumps(str(base))[1:-1], "<project>")
    return text
