"""Safe file writes (atomic replace, backups), so user data is never half-written or lost; and where charframe caches.

Every write goes through `atomic_path` (or `atomic_write_bytes`/`atomic_write_text` on top of it):

- the data goes to a temporary file in the target's own folder, then one `os.replace` puts it in place, so a
  crash leaves the old file or the new one, whole — never a half-written file;
- the temporary name is short (`.cf-<8 hex>.tmp`, 16 characters), so it never needs a longer name than the
  target (a 248-character image name still gets its caption; a `.<name>.<random>.tmp` would not fit);
- the target's folder is checked: with `parents=False` a missing one is an error naming it (a silent
  `mkdir -p` of a mistyped user path would hide the mistake); `parents=True` creates it. The default is
  still `True` because the trainer and the LoRA writers save into folders they expect to be made; every
  write of a path the user named passes `parents=False` (or calls `check_parent` before long work);
- temporaries left by a killed write (older than `STALE_MINUTES`, matching only our own pattern) are removed
  the first time a process writes into that folder;
- inside `confine_writes(roots)` (the pipeline and the per-character commands hold it for their project), a
  write whose folder REALLY lies outside every root — a subset folder that is a link to a folder elsewhere —
  is refused before any folder is made or byte written (`util.paths.check_inside`; checked once per folder).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Iterable, Iterator

from charframe.errors import CharframeError
from charframe.util.paths import check_inside

#: charframe's shipped data files (rules, presets, tables, configs): `charframe/data/`.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"

TEMP_PREFIX, TEMP_SUFFIX = ".cf-", ".tmp"
_TEMP_NAME = re.compile(r"\.cf-[0-9a-f]{8}\.tmp")
#: A temporary older than this is left by a killed write (no write takes that long to finish).
STALE_MINUTES = 60
_cleaned: set[str] = set()  # folders already swept by this process
_confined: tuple[Path, ...] = ()  # the roots writes must stay in (none: anywhere), see `confine_writes`
_confined_ok: set[str] = set()  # folders checked against them


#: Hand-written text files (character, group, project, rules, selection files) are small: a larger one is a
#: mistake (or `/dev/zero` behind a link), refused before it is read.
MAX_TEXT_BYTES = 16 * 2**20
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def special_kind(mode: int) -> str | None:
    """What a file of this `st_mode` is when it is not a regular file ("a named pipe (FIFO)"), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_small_file(path: str | os.PathLike, what: str = "file", limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a hand-written file: missing, a folder, a pipe or device (which would block or never end)
    or larger than `limit` is one `CharframeError` naming it, checked before a byte is read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CharframeError(f"{path}: no such {what}") from None
    except OSError as e:
        raise CharframeError(f"{path}: cannot read ({e.strerror or e})") from None
    kind = special_kind(st.st_mode)
    if kind == "a folder":
        raise CharframeError(f"{path}: is a folder; pass the {what} itself")
    if kind:
        raise CharframeError(f"{path}: is {kind}, not a {what}; pass the {what} itself")
    if st.st_size > limit:
        raise CharframeError(f"{path}: {st.st_size:,} bytes, too large for a {what} (at most {limit // 2**20} MiB); "
                             f"is it the right file?")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise CharframeError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:  # it grew after the check
        raise CharframeError(f"{path}: too large for a {what} (at most {limit // 2**20} MiB); is it the right file?")
    return data


def temp_name() -> str:
    """A fresh temporary file name: `.cf-<8 hex>.tmp` (hidden, short, ours by pattern)."""
    return f"{TEMP_PREFIX}{secrets.token_hex(4)}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return _TEMP_NAME.fullmatch(name) is not None


def clean_stale_temps(folder: str | os.PathLike, older_than_minutes: float = STALE_MINUTES) -> list[Path]:
    """Remove our temporaries (`.cf-<8 hex>.tmp`) older than `older_than_minutes` in `folder`; return them."""
    limit = time.time() - older_than_minutes * 60
    removed = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < limit:
                            os.unlink(entry.path)
                            removed.append(Path(entry.path))
    except OSError:
        pass  # an unreadable folder: the write itself will report it
    return removed


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (in bytes) the file system of `folder` takes (255 where it cannot say)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, AttributeError, ValueError, TypeError):
        return 255


def check_name_length(path: str | os.PathLike, why: str = "") -> Path:
    """`path` unless its file name is longer than its file system allows: then one error, before any writing."""
    path = Path(path)
    limit = name_max(path.parent)
    size = len(os.fsencode(path.name))
    if size > limit:
        raise CharframeError(f"{path}: file name of {size} bytes is longer than the file system allows ({limit})"
                             + (f"; {why}" if why else "; choose a shorter name"))
    return path


@contextlib.contextmanager
def confine_writes(roots: Iterable[str | os.PathLike]) -> Iterator[tuple[Path, ...]]:
    """While the block runs, every write made through this module must really land inside one of `roots`
    (links followed): a folder that leads outside is one `CharframeError`, before anything is made there.

    Process-wide (the worker threads of clean and prepare write too); nested blocks use the innermost roots.
    """
    global _confined
    previous = _confined
    _confined = tuple(Path(r) for r in roots)
    _confined_ok.clear()
    try:
        yield _confined
    finally:
        _confined = previous
        _confined_ok.clear()


def check_confined(folder: str | os.PathLike) -> None:
    """Inside `confine_writes`: `folder` (where a file is about to be written) must really lie in its roots."""
    if not _confined:
        return
    key = os.fspath(folder)
    if key not in _confined_ok:
        check_inside(folder, _confined)
        _confined_ok.add(key)


def check_parent(path: str | os.PathLike, *, parents: bool = False) -> Path:
    """`path` as a Path whose folder exists (created with `parents=True`); else one clear error naming it."""
    path = Path(path)
    parent = path.parent
    check_confined(parent)
    if parent.is_dir():
        return path
    if parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)  # exist_ok: another writer may make it at the same time
        except OSError as e:
            if not parent.exists():
                raise CharframeError(f"{parent}: cannot create the folder ({e.strerror or e})") from None
    if parent.is_dir():  # checked again: a parallel writer may have just created it
        return path
    if parent.exists():
        raise CharframeError(f"{parent}: is a file, but it must be the folder of {path.name}")
    raise CharframeError(f"{parent}: no such folder (create it first, or choose an existing folder for {path.name})")


def check_writable_target(path: str | os.PathLike, *, parents: bool = False) -> Path:
    """Checks done before long work: the folder exists (or may be created) and `path` is not a folder."""
    path = check_parent(path, parents=parents)
    if path.is_dir():
        raise CharframeError(f"{path}: is a folder; give a file name for the output")
    return path


def _sweep_once(folder: str) -> None:
    """Remove stale temporaries of ours in `folder`, the first time this process writes there."""
    if folder not in _cleaned:
        _cleaned.add(folder)
        clean_stale_temps(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; on success it replaces `path` in one rename.

    A crash or exception leaves `path` untouched and removes the temporary file. With `parents=False` the
    folder must exist (else one error naming it). A library writer's failure to write the temporary file (a
    full disk under safetensors or torch.save) is raised as the `OSError` it is (`write_error`).
    """
    path = check_writable_target(path, parents=parents)
    _sweep_once(str(path.parent))
    tmp_path = path.parent / temp_name()
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError) and e.filename is not None and os.fspath(e.filename) == os.fspath(tmp_path):
            raise OSError(e.errno, e.strerror, os.fspath(path)) from e  # name the file the user knows
        err = write_error(e, path)
        if err is not None:
            raise err from e
        raise


#: words of torch.save's failure to write its zip stream (a full disk gives "unexpected pos …")
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "inline_container.cc", "file write failed")
_OS_ERROR = re.compile(r"os error (\d+)")


def write_error(exc: BaseException, path: str | os.PathLike) -> OSError | None:
    """The `OSError` behind a library's failed write of `path`, for one handler to report (None: not one).

    safetensors raises `SafetensorError("… No space left on device (os error 28)")` and torch.save a
    `RuntimeError("[enforce fail at inline_container.cc…] unexpected pos …")`; neither is an OSError, so a
    full disk would escape every `except OSError` (the pipeline's failed-step handler among them).
    """
    if isinstance(exc, OSError) or not isinstance(exc, Exception):
        return None
    text = str(exc)
    m = _OS_ERROR.search(text)
    if m and type(exc).__name__ == "SafetensorError":
        n = int(m.group(1))
        return OSError(n, os.strerror(n), os.fspath(path))
    if isinstance(exc, RuntimeError) and any(w in text for w in _TORCH_WRITE_FAILED):
        n = errno.ENOSPC if _nearly_full(path) else errno.EIO
        return OSError(n, os.strerror(n), os.fspath(path))
    return None


def _nearly_full(path: str | os.PathLike) -> bool:
    try:
        return shutil.disk_usage(os.path.dirname(os.fspath(path)) or os.curdir).free < 64 * 2**20
    except OSError:
        return False


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True, parents: bool = True) -> os.stat_result:
    """Write `data` to `path` atomically; return the new file's stat (size, mtime survive the rename).

    `fsync=False` skips the flush to disk (still atomic against a crash of the process, not of the machine):
    for many small files that can be rebuilt, such as captions, where an fsync each costs more than the write.
    The folder is checked (`check_writable_target`) on the first write into it; later writes there cost no
    extra system call, and a folder that vanished since, or a target that is a folder, still gets the same
    one-line error (asked for only when the write fails).
    """
    target = os.fspath(path)
    folder = os.path.dirname(target) or os.curdir
    if _confined and folder not in _confined_ok:
        check_confined(folder)
    if folder not in _cleaned:
        check_writable_target(target, parents=parents)
        _sweep_once(folder)
    tmp = os.path.join(folder, temp_name())
    try:
        fd = os.open(tmp, _OPEN_FLAGS, 0o666)
    except (FileNotFoundError, NotADirectoryError):
        check_writable_target(target, parents=parents)  # names the missing folder (or creates it)
        fd = os.open(tmp, _OPEN_FLAGS, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            check_writable_target(target)  # a vanished folder or a target that is a folder: its one-line error
            if e.filename is None and e.errno:  # os.write's ENOSPC names no file: name the one being written
                raise OSError(e.errno, e.strerror or os.strerror(e.errno), target) from e
        raise
    return st


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", *, fsync: bool = True,
                      parents: bool = True) -> os.stat_result:
    """Write `text` to `path` atomically, UTF-8 and with '\\n' line ends on every platform."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync, parents=parents)


def backup_path(path: str | os.PathLike) -> Path:
    """The first free name `<name>.bak`, `<name>.bak1`, … beside `path`."""
    path = Path(path)
    candidate = path.with_name(path.name + ".bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak{n}")
        n += 1
    return candidate


def backup_file(path: str | os.PathLike) -> Path:
    """Copy `path` to a fresh backup name (never overwriting an older backup); return it."""
    dest = check_name_length(backup_path(path), "the backup name is too long: shorten the file's name")
    check_confined(dest.parent)
    shutil.copy2(path, dest)
    return dest


def free_output_path(path: str | os.PathLike) -> Path:
    """`path` if free, else `<stem>-1<suffix>`, `<stem>-2<suffix>`, … (for outputs never to overwrite)."""
    path = Path(path)
    if not path.exists():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


ENV_CACHE = "CHARFRAME_CACHE_DIR"


def user_cache_dir() -> Path:
    """charframe's cache folder: $CHARFRAME_CACHE_DIR, else the platform's user cache."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "charframe"


def new_stamped_folder(base: Path) -> Path:
    """A new folder `base/<YYYYmmdd-HHMMSS>` (`-2`, `-3` … when that exists already), made: one per run, in order."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = base / stamp, 1
    while folder.exists():
        n += 1
        folder = base / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder
