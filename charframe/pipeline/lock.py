"""One run per character at a time: a lock file `LoRAWork/<owner>/pipeline/run.lock` holding the owner's PID.

Two runs of one character would train over each other's files. The lock is created atomically (O_EXCL); a
second run is refused with a message naming the PID holding it. A lock left by a process that no longer
exists (a crash, a killed run) is taken over, so a killed run can simply be started again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from charframe.errors import CharframeError

LOCK_NAME = "run.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _try_create(path: Path, body: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    return True


@contextlib.contextmanager
def run_lock(folder: Path, what: str) -> Iterator[Path]:
    """Hold the run lock of `folder` while the block runs; refuse when a live process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    for _ in range(3):
        if _try_create(path, body):
            break
        holder = _holder(path)
        if holder is None and time.time() - _mtime(path) < 2:
            time.sleep(0.1)  # being written right now
            continue
        pid = int((holder or {}).get("pid", -1))
        same_host = (holder or {}).get("host", socket.gethostname()) == socket.gethostname()
        if holder is not None and (not same_host or pid_alive(pid)):
            since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("since", 0))))
            raise CharframeError(
                f"{what} is already being run by process {pid} on {holder.get('host')} (since {since}); "
                f"wait for it to finish, or delete {path} if that process is gone"
            )
        path.unlink(missing_ok=True)  # left by a dead process: take it over
    else:
        raise CharframeError(f"{path}: could not take the run lock of {what}; delete the file and start again")
    try:
        yield path
    finally:
        holder = _holder(path)
        if holder is not None and holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
