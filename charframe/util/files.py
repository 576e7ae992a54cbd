"""Safe file writes (atomic replace, backups), so user data is never half-written or lost; and where charframe caches."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

#: charframe's shipped data files (rules, presets, tables, configs): `charframe/data/`.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
#: Bytes of the target's name kept in a temporary file's name (".<start>.<8 random>.tmp").
_TMP_NAME_BYTES = 64


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A crash or exception leaves `path` untouched and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps only the start of the target's name, so it never needs more than the
    # file system's 255-byte limit, even when the target's own name is near it.
    short = path.name.encode("utf-8")[:_TMP_NAME_BYTES].decode("utf-8", "ignore")
    fd, tmp = tempfile.mkstemp(prefix=f".{short}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600; give the file the mode a plain open() would have.
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (fsync'd temp file + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically, UTF-8 and with '\\n' line ends on every platform."""
    atomic_write_bytes(path, text.encode(encoding))


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
    dest = backup_path(path)
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
