"""Step manifests: what one pipeline step consumed and produced, so a rerun redoes only what changed.

A manifest (JSON, one per step of one stage: `LoRAWork/<owner>/pipeline/<stage>.<step>.json`) holds

- `params`: a digest of everything that is not a file — the recipe, the caption rules, the prompts, the
  charframe version;
- `inputs` / `outputs`: every file as `path → [size, mtime_ns, content digest]`, paths relative to the project
  root (a moved or copied project stays up to date).

A step is fresh when its params digest is unchanged, the same input files exist with the same content, and
its outputs are all still there. An output that was edited by hand (a retouched image in a dataset) is kept:
the step does not run again over it, but every step reading it sees a changed input. Content is compared by digest (a touched but identical file is still
fresh, as in DVC), but a file whose size and mtime equal the recorded ones is taken as unchanged without
being read (as make and git's index do) — that keeps "nothing to do" for fifty characters under a second.

Files and parameters are fingerprinted exactly as `charframe.util.manifest` does for per-file outputs
(captions, templates): (size, mtime_ns, BLAKE2b digest) and `digest_params`; this module only groups them
per step.

A manifest is written (atomically) only after its step succeeded, and removed before a step starts, so a
run killed mid-step redoes exactly that step next time.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from charframe.util.files import atomic_write_text
from charframe.util.manifest import Fingerprint, digest_file, digest_params

VERSION = 2  # 2: digests from util.manifest

#: path → (size, mtime_ns, digest)
FileTable = dict[str, Fingerprint]


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
        """Whether the two sets can share a file (one root at or below the other, same patterns or any)."""
        a, b = self.root, other.root
        nested = a == b or a in b.parents or b in a.parents
        if not nested:
            return False
        if not self.patterns or not other.patterns or a != b:
            return True
        return bool(set(self.patterns) & set(other.patterns)) or any(
            _suffix(p) == _suffix(q) for p in self.patterns for q in other.patterns)


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


def params_digest(params: Mapping[str, Any], base: Path | None = None) -> str:
    """Digest of the non-file inputs (`util.manifest.digest_params`: canonical JSON + charframe's version).
    Paths below `base` (the project root) count relative to it, so a moved project stays up to date."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    if base is not None:
        text = text.replace(json.dumps(str(base))[1:-1], "<project>")
    return digest_params(text)


def _current(sets: Iterable[FileSet], base: Path | None) -> dict[str, str]:
    """manifest key (project-relative posix path, else absolute) → path, for every file of `sets`."""
    prefix = str(base) + os.sep if base is not None else None
    current: dict[str, str] = {}
    for fs in sets:
        for p in fs.paths():
            key = p[len(prefix):].replace(os.sep, "/") if prefix and p.startswith(prefix) else p
            current.setdefault(key, p)
    return current


def fingerprint(sets: Iterable[FileSet], known: FileTable | None = None, base: Path | None = None) -> FileTable:
    """`path → (size, mtime_ns, digest)` of every file of `sets` (paths relative to `base` when below it). A file
    whose size and mtime equal the entry in `known` (a previous manifest) keeps that digest without being read."""
    known = known or {}
    table: FileTable = {}
    for key, p in _current(sets, base).items():
        st = os.stat(p)
        old = known.get(key)
        if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            table[key] = old
        else:
            table[key] = (st.st_size, st.st_mtime_ns, digest_file(p))
    return table


@dataclass
class Manifest:
    params: str
    inputs: FileTable = field(default_factory=dict)
    outputs: FileTable = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "params": self.params, "seconds": round(self.seconds, 3),
                           "inputs": self.inputs, "outputs": self.outputs}, indent=1, sort_keys=True)


def read_manifest(path: Path) -> Manifest | None:
    """The manifest at `path`; None when missing or unreadable (the step is then simply stale)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return None
        table = lambda d: {str(k): (int(v[0]), int(v[1]), str(v[2])) for k, v in d.items()}  # noqa: E731
        return Manifest(str(data["params"]), table(data["inputs"]), table(data["outputs"]), float(data.get("seconds", 0)))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def record(path: Path, params: str, inputs: FileTable, outputs: Iterable[FileSet], seconds: float = 0.0,
           base: Path | None = None) -> Manifest:
    """Write the manifest of a finished step (inputs fingerprinted before it ran, outputs now)."""
    m = Manifest(params, inputs, fingerprint(outputs, base=base), seconds)
    atomic_write_text(path, m.to_json())
    return m


def invalidate(path: Path) -> None:
    """Forget a step's manifest (before it runs: a crash then leaves it stale)."""
    path.unlink(missing_ok=True)


def stale_reason(path: Path, params: str, inputs: Iterable[FileSet], outputs: Iterable[FileSet],
                 base: Path | None = None) -> str | None:
    """Why the step recorded at `path` must run again, or None when it is up to date."""
    m = read_manifest(path)
    if m is None:
        return "never run"
    if m.params != params:
        return "settings changed"
    now = _changed(m.inputs, _current(inputs, base))
    if now:
        return f"input {now}"
    current = _current(outputs, base)
    gone = next((k for k in m.outputs if k not in current), None)
    return f"output {Path(gone).name} missing" if gone else None


def is_fresh(path: Path, params: str, inputs: Iterable[FileSet], outputs: Iterable[FileSet], base: Path | None = None) -> bool:
    return stale_reason(path, params, inputs, outputs, base) is None


def _changed(recorded: FileTable, current: dict[str, str]) -> str | None:
    """The first difference between recorded files and the files now, in words."""
    for key in recorded.keys() - current.keys():
        return f"{Path(key).name} missing"
    for key in current.keys() - recorded.keys():
        return f"{Path(key).name} added"
    for key, (size, mtime, digest) in recorded.items():
        p = current[key]
        try:
            st = os.stat(p)
        except OSError:
            return f"{Path(p).name} missing"
        if st.st_size == size and st.st_mtime_ns == mtime:
            continue
        if st.st_size != size or digest_file(p) != digest:
            return f"{Path(p).name} changed"
    return None
