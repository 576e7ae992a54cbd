"""What is already done: per output file, the fingerprints of its inputs and of its parameters.

One mechanism for every step that must know whether its output is still right (captions, templates, and
the pipeline's `rerun`): a `Manifest` is a small JSON file, in a folder the caller picks, with one entry per
output file (named relative to the manifest's folder):

    {"version": 3, "outputs": {"f00.txt": {"file": [size, mtime_ns, digest],
                                            "params": "<digest of the parameters>",
                                            "inputs": {"../src/f00.png": [size, mtime_ns, digest]}}}}

- A file (output or input) is fingerprinted by size + mtime_ns; its content digest (BLAKE2b, 64 bits) is
  computed only when those changed, so a rerun over thousands of unchanged files costs one `stat` each,
  and a file that was touched or copied with the same bytes still counts as unchanged (its new stat is
  remembered on the next `save`).
- Parameters are any JSON value (rules, settings, a caption text); their canonical JSON is digested
  together with charframe's version, so an upgrade makes every output stale once (a str, such as a
  caption, is digested as `<version> NUL <text>`: the hot path of a rerun, and never equal to a JSON text,
  which starts with `[`).

API::

    m = Manifest.load(folder / ".charframe-step.json")          # empty when missing or unreadable
    params = {"size": 1024, "maps": ["depth"]}
    state = m.status("out.png", inputs=[src_path], params=params)
    #   Status.UP_TO_DATE  the recorded file is there, unchanged, made from these inputs and parameters
    #   Status.STALE       the recorded file is there, unchanged, but inputs or parameters changed
    #   Status.FOREIGN     a file is there that charframe did not record (a hand edit, another tool)
    #   Status.MISSING     no file
    if state is not Status.UP_TO_DATE:
        st = atomic_write_bytes(folder / "out.png", data)
        m.record("out.png", inputs=[src_path], params=params, data=data, stat=st)
    m.up_to_date("out.png", inputs=[src_path], params=params)    # = status(...) is UP_TO_DATE
    m.holds("out.png", data)        # the recorded, unchanged file holds exactly `data` (no read needed)
    m.forget_missing()              # drop entries whose file is gone
    m.save()                        # atomic, and only when something changed

`record` without `data` digests the file on disk (after the caller wrote it). Inputs are paths (relative to
the manifest's folder when inside it); `inputs=` may be any iterable of paths. A Manifest is not shared
between threads: use one per folder.

What a step does with an existing output is one decision for every step that writes files (`decide`):

    check = m.check("raw/f12-0.png", inputs=[...], params=...)   # Check(file, current)
    #   file: "missing" | "ours" (as recorded) | "edited" (recorded, changed since) | "unknown" (never recorded)
    #   current: the recorded inputs and parameters equal these
    decide(check, keep_deleted=False)
    #   "skip"    ours and current: nothing to do
    #   "make"    missing (and not a deletion to honour): write it
    #   "keep"    a file placed or edited by hand while its sources did not change: protected
    #   "replace" ours or edited, made from other inputs/parameters: move it to a recoverable place, write anew

Sets of files (one pipeline step: its outputs, inputs and parameters as one entry) use the same
fingerprints and the same file (`record_set`, `set_status`); keys of such entries are relative to `base`
(default: the manifest's folder; the pipeline passes the project root, so a moved project stays up to date).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Container, Iterable, Literal, Mapping

from charframe import __version__
from charframe.util.files import atomic_write_text

log = logging.getLogger(__name__)

VERSION = 3
Fingerprint = tuple[int, int, str]  # size, mtime_ns, content digest


class Status(enum.Enum):
    MISSING = "missing"
    FOREIGN = "foreign"
    STALE = "stale"
    UP_TO_DATE = "up to date"


def digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def digest_file(path: str | os.PathLike) -> str:
    """The file's content digest. A `.safetensors` file is identified by its tensors (names, dtypes, shapes and
    bytes), not by its `__metadata__`: charframe's writers stamp provenance (the time of a merge) there, and a
    LoRA made again from the same inputs must count as the same file, so that nothing after it reruns."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        if os.fspath(path).endswith(".safetensors"):
            _safetensors_header(f, h)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safetensors_header(f: Any, h: Any) -> None:
    """Feed the header without `__metadata__` to `h` and leave `f` at the tensor data; on anything that is not
    a well-formed header, rewind so that the whole file is digested as bytes."""
    import struct

    head = f.read(8)
    try:
        (n,) = struct.unpack("<Q", head)
        if not 1 < n < 100_000_000:
            raise ValueError(n)
        header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("not a table")
        header.pop("__metadata__", None)
        h.update(b"safetensors\0" + json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    except (struct.error, ValueError, UnicodeDecodeError):
        f.seek(0)


def digest_params(params: Any) -> str:
    """Digest of parameters (canonical JSON) and charframe's version."""
    if isinstance(params, str):  # a caption, checked once per file in a rerun: `<version> NUL <text>`, no encoder
        return digest_bytes(f"{__version__}\0{params}".encode("utf-8", "surrogatepass"))
    text = json.dumps([__version__, params], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return digest_bytes(text.encode("utf-8"))


@dataclass(frozen=True)
class Check:
    """What is on disk under an output's name, and whether its record matches the inputs and parameters now."""

    file: Literal["missing", "ours", "edited", "unknown"]
    current: bool = False


Decision = Literal["skip", "make", "keep", "replace"]


def decide(check: Check, *, keep_deleted: bool = False) -> Decision:
    """The one rule for an existing output (see the module doc). `keep_deleted`: a recorded file that is gone
    while its sources did not change was deleted by hand, and stays deleted (a dataset image the user removed)."""
    if check.file == "missing":
        return "skip" if keep_deleted and check.current else "make"
    if check.file == "ours":
        return "skip" if check.current else "replace"
    if check.file == "unknown" or check.current:
        return "keep"
    return "replace"


class Manifest:
    """Fingerprints of outputs, their inputs and parameters, kept in one JSON file; see the module doc."""

    def __init__(self, path: str | os.PathLike, outputs: dict[str, dict[str, Any]] | None = None,
                 base: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        self.folder = self.path.parent
        # prefix + name = an output's path: plain strings, since a rerun checks thousands of entries
        self._prefix = os.path.join(str(self.folder), "")
        self.base = Path(base) if base is not None else self.folder
        self._base_prefix = os.path.join(str(self.base), "")
        self.outputs: dict[str, dict[str, Any]] = outputs or {}
        self.dirty = False
        self._inputs_seen: dict[str, Fingerprint | None] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, base: str | os.PathLike | None = None) -> Manifest:
        """The manifest at `path`; empty when missing, and when unreadable (with a warning: its outputs
        then count as foreign, the safe side)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, _outputs_of(data), base)
        except FileNotFoundError:
            return cls(path, base=base)
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            log.warning("%s: unreadable, ignored (files that differ will be treated as not written by charframe)", path)
            return cls(path, base=base)

    # --- checking -------------------------------------------------------------------------------------

    def status(self, name: str, *, inputs: Iterable[str | os.PathLike] = (), params: Any = None) -> Status:
        entry = self.outputs.get(name)
        try:
            st = os.stat(self._prefix + name)
        except FileNotFoundError:
            return Status.MISSING
        if entry is None or not self._same_file(name, entry, st):
            return Status.FOREIGN
        return Status.UP_TO_DATE if self._current(entry, inputs, params) else Status.STALE

    def check(self, name: str, *, inputs: Iterable[str | os.PathLike] = (), params: Any = None) -> Check:
        """What is on disk under `name` and whether its record still matches `inputs` and `params`."""
        entry = self.outputs.get(name)
        inputs = list(inputs)
        current = entry is not None and self._current(entry, inputs, params)
        try:
            st = os.stat(self._prefix + name)
        except FileNotFoundError:
            return Check("missing", current)
        if entry is None:
            return Check("unknown")
        return Check("ours" if self._same_file(name, entry, st) else "edited", current)

    def _current(self, entry: dict[str, Any], inputs: Iterable[str | os.PathLike], params: Any) -> bool:
        """The entry was made from exactly these inputs (by content) and parameters."""
        if entry.get("params") != digest_params(params):
            return False
        recorded = entry.get("inputs")
        keys = [self._key(p) for p in inputs]
        if not recorded and not keys:  # an output made from parameters alone (a caption): done
            return True
        recorded = recorded or {}
        if set(keys) != set(recorded):
            return False
        for key in keys:
            now = self._input(key, recorded[key])
            if now is None or now[2] != recorded[key][2]:
                return False
            if now[:2] != tuple(recorded[key][:2]):
                recorded[key] = list(now)
                self.dirty = True
        return True

    def up_to_date(self, name: str, *, inputs: Iterable[str | os.PathLike] = (), params: Any = None) -> bool:
        return self.status(name, inputs=inputs, params=params) is Status.UP_TO_DATE

    def holds(self, name: str, data: bytes) -> bool:
        """Whether the recorded file `name` is unchanged on disk and holds exactly `data`."""
        entry = self.outputs.get(name)
        if entry is None or entry["file"][2] != digest_bytes(data):
            return False
        try:
            st = os.stat(self.folder / name)
        except FileNotFoundError:
            return False
        return self._same_file(name, entry, st)

    # --- recording ------------------------------------------------------------------------------------

    def record(self, name: str, *, inputs: Iterable[str | os.PathLike] = (), params: Any = None,
               data: bytes | None = None, stat: os.stat_result | None = None) -> None:
        """Remember output `name` as written now from `inputs` and `params` (`data`: its bytes, if known)."""
        path = self._prefix + name
        st = stat or os.stat(path)
        digest = digest_bytes(data) if data is not None else digest_file(path)
        entry: dict[str, Any] = {"file": [st.st_size, st.st_mtime_ns, digest], "params": digest_params(params)}
        fingerprints = {}
        for p in inputs:
            key = self._key(p)
            now = self._input(key, None)
            if now is None:
                raise FileNotFoundError(f"{self._abs(key)}: input of {name} is missing")
            fingerprints[key] = list(now)
        if fingerprints:
            entry["inputs"] = fingerprints
        if self.outputs.get(name) != entry:
            self.outputs[name] = entry
            self.dirty = True

    def forget(self, name: str) -> None:
        if self.outputs.pop(name, None) is not None:
            self.dirty = True

    def forget_missing(self, present: Container[str] | None = None) -> None:
        """Drop the entries whose output file no longer exists (`present`: the folder's file names, when the
        caller has just listed them — then no `stat` per entry)."""
        exists = (lambda n: n in present) if present is not None else (
            lambda n: os.path.exists(self._prefix + n))
        for name in [n for n in self.names() if not exists(n)]:
            self.forget(name)

    def save(self) -> bool:
        """Write the manifest (atomically) if anything changed; True if written."""
        if not self.dirty:
            return False
        body = {"version": VERSION, "outputs": dict(sorted(self.outputs.items()))}
        atomic_write_text(self.path, json.dumps(body, separators=(",", ":")), fsync=False)
        self.dirty = False
        return True

    def names(self) -> list[str]:
        """Every recorded per-file output name (set entries excluded)."""
        return [n for n, e in self.outputs.items() if "file" in e]

    # --- sets of files: one entry for all outputs of a step ---------------------------------------------

    def fingerprints(self, paths: Iterable[str], known: Mapping[str, Any] | None = None) -> dict[str, Fingerprint]:
        """`key → (size, mtime_ns, digest)` of `paths` (keys relative to `base` when below it); a file whose
        size and mtime equal its entry in `known` keeps that digest without being read."""
        known = known or {}
        table: dict[str, Fingerprint] = {}
        for p in paths:
            key = self.set_key(p)
            st = os.stat(p)
            old = known.get(key)
            if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
                table[key] = (st.st_size, st.st_mtime_ns, str(old[2]))
            else:
                table[key] = (st.st_size, st.st_mtime_ns, digest_file(p))
        return table

    def set_inputs(self, name: str) -> dict[str, Any]:
        """The input fingerprints recorded for set `name` ({} when none): pass as `known` to `fingerprints`."""
        entry = self.outputs.get(name) or {}
        return dict(entry.get("inputs") or {})

    def record_set(self, name: str, *, outputs: Iterable[str], inputs: Mapping[str, Fingerprint], params: Any,
                   seconds: float = 0.0) -> None:
        """Remember that set `name` produced the files `outputs` (fingerprinted now) from `inputs` (fingerprinted
        before it ran, so a file changed meanwhile makes it stale) and `params`."""
        previous = (self.outputs.get(name) or {}).get("files") or {}
        self.outputs[name] = {"files": self.fingerprints(outputs, previous), "params": digest_params(params),
                              "inputs": {k: list(v) for k, v in inputs.items()}, "seconds": round(seconds, 3)}
        self.dirty = True

    def set_status(self, name: str, *, outputs: Iterable[str], inputs: Iterable[str], params: Any,
                   protect_outputs: bool = False) -> str | None:
        """Why set `name` must be made again (in words), or None when its record matches: the same parameters,
        the same input files with the same content, and every recorded output still there with the content it
        was written with (`protect_outputs`: outputs a user may edit or delete, such as dataset images, are
        theirs to change and do not make the set stale)."""
        entry = self.outputs.get(name)
        if entry is None or "files" not in entry:
            return "never run"
        if entry.get("params") != digest_params(params):
            return "settings changed"
        why = self._changed(entry["inputs"], {self.set_key(p): p for p in inputs})
        if why:
            return f"input {why}"
        if protect_outputs:
            return None
        why = self._changed(entry["files"], {self.set_key(p): p for p in outputs}, extra_ok=True)
        return f"output {why}" if why else None

    def set_key(self, path: str) -> str:
        """A set member's key: relative to `base` (posix) when below it, else the absolute path."""
        return path[len(self._base_prefix):].replace(os.sep, "/") if path.startswith(self._base_prefix) else path

    def _changed(self, recorded: dict[str, Any], current: Mapping[str, str], extra_ok: bool = False) -> str | None:
        """The first difference between recorded files and the files now, in words (re-reading a file only when
        its size or mtime differ from the record)."""
        for key in recorded.keys() - current.keys():
            if not extra_ok or not os.path.exists(self._set_path(key)):
                return f"{os.path.basename(key)} missing"
        if not extra_ok:
            for key in current.keys() - recorded.keys():
                return f"{os.path.basename(key)} added"
        for key, (size, mtime, digest) in recorded.items():
            p = current.get(key) or self._set_path(key)
            try:
                st = os.stat(p)
            except OSError:
                return f"{os.path.basename(key)} missing"
            if st.st_size == size and st.st_mtime_ns == mtime:
                continue
            if st.st_size != size or digest_file(p) != digest:
                return f"{os.path.basename(key)} changed"
            recorded[key] = [st.st_size, st.st_mtime_ns, digest]  # touched, same bytes: not read again next time
            self.dirty = True
        return None

    def _set_path(self, key: str) -> str:
        return key if os.path.isabs(key) else self._base_prefix + key.replace("/", os.sep)

    # --- internals ------------------------------------------------------------------------------------

    def _same_file(self, name: str, entry: dict[str, Any], st: os.stat_result) -> bool:
        """Same size and mtime as recorded, or (after a touch or copy) the same content; refreshes the stat."""
        size, mtime, digest = entry["file"]
        if (st.st_size, st.st_mtime_ns) == (size, mtime):
            return True
        if st.st_size != size:
            return False
        try:
            same = digest_file(self.folder / name) == digest
        except OSError:
            return False
        if same:
            entry["file"] = [st.st_size, st.st_mtime_ns, digest]
            self.dirty = True
        return same

    def _key(self, path: str | os.PathLike) -> str:
        p = Path(path)
        absolute = p if p.is_absolute() else Path(os.path.abspath(p))
        try:
            return os.path.relpath(absolute, os.path.abspath(self.folder)).replace(os.sep, "/")
        except ValueError:  # Windows: another drive
            return str(absolute)

    def _abs(self, key: str) -> Path:
        p = Path(key)
        return p if p.is_absolute() else self.folder / p

    def _input(self, key: str, recorded: list | None) -> Fingerprint | None:
        """An input's fingerprint now (digest read only when size/mtime differ from `recorded`)."""
        if key in self._inputs_seen and recorded is None:
            return self._inputs_seen[key]
        try:
            st = os.stat(self._abs(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if recorded is not None and (st.st_size, st.st_mtime_ns) == tuple(recorded[:2]):
            fp: Fingerprint = (st.st_size, st.st_mtime_ns, recorded[2])
        else:
            cached = self._inputs_seen.get(key)
            fp = cached if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns) else (
                st.st_size, st.st_mtime_ns, digest_file(self._abs(key)))
        self._inputs_seen[key] = fp
        return fp


def _outputs_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries of a manifest file; a version-2 caption manifest (`captions`: digest, size, mtime) is read
    with unknown parameters, so its captions count as charframe's own but are compared once."""
    if data.get("version") == VERSION:
        outputs = data["outputs"]
        for entry in outputs.values():
            if "files" in entry:  # a set
                entry["files"] = {str(k): [int(v[0]), int(v[1]), str(v[2])] for k, v in entry["files"].items()}
                entry["inputs"] = {str(k): [int(v[0]), int(v[1]), str(v[2])] for k, v in entry["inputs"].items()}
                continue
            size, mtime, digest = entry["file"]
            entry["file"] = [int(size), int(mtime), str(digest)]
        return {str(k): v for k, v in outputs.items()}
    if data.get("version") == 2 and isinstance(data.get("captions"), dict):
        return {str(k): {"file": [int(v[1]), int(v[2]), str(v[0])], "params": None} for k, v in data["captions"].items()}
    raise ValueError("unknown manifest format")
