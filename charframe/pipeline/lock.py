"""One run per character at a time: a lock file `LoRAWork/<owner>/pipeline/run.lock` holding the owner's PID and host.

Two runs of one character would train over each other's files. The lock is created atomically (O_EXCL); a
second run is refused with a message naming the PID and host holding it. A lock left by a process that no
longer exists (a crash, a killed run) is taken over, so a killed run can simply be started again; so is a lock
file that is not a record charframe writes (damaged, emptied, edited by hand) once it is not being written any
more. A folder, pipe, device or link in the lock's place is refused with one message (it was not made by charframe).

Across hosts (a project on a shared file system, steps run by Ray or Slurm on other nodes) a PID says nothing:
whether process 4242 of node-07 lives cannot be asked from node-03. So the holder touches its lock every
`HEARTBEAT` seconds, and a lock of another host is taken over once it has not been touched for `STALE_AFTER`
seconds (its holder, or its node, died). On the lock's own host the PID decides at once, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from charframe.errors import CharframeError
from charframe.util.files import check_parent, special_kind

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
#: seconds between the holder's touches of its lock (keeps it fresh for the other hosts)
HEARTBEAT = 30.0
#: a lock of another host untouched this long is left by a dead process or node: taken over. Far above the
#: heartbeat, so that clock skew between nodes and a slow shared file system cannot break a live lock
STALE_AFTER = 600.0


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


#: a lock file is one short JSON line; anything larger is not one of ours
MAX_LOCK_BYTES = 4096


def _holder(path: Path) -> dict | None:
    """The lock's record {pid, host, since}; None when the file is unreadable or not a record charframe writes
    (truncated, hand-edited, another tool's): such a file holds no live run once it is no longer being written.
    A folder, pipe, device or link in its place is one error (reading a FIFO would block, /dev/zero never end)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    kind = special_kind(st.st_mode)
    if kind:
        raise CharframeError(f"{path}: is {kind}, not a run lock charframe wrote; remove it and start again")
    if st.st_size > MAX_LOCK_BYTES:
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, host, since = data.get("pid"), data.get("host", ""), data.get("since", 0)
    if type(pid) is not int or not 0 < pid < 2**31 or not isinstance(host, str) \
            or isinstance(since, bool) or not isinstance(since, (int, float)) or not 0 <= since < 1e11:
        return None
    return {"pid": pid, "host": host or socket.gethostname(), "since": float(since)}


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
    path = check_parent(folder / LOCK_NAME, parents=True)  # inside the project (util.files.confine_writes)
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    for _ in range(3):
        if _try_create(path, body):
            break
        holder = _holder(path)
        if holder is None and time.time() - _mtime(path) < 2:
            time.sleep(0.1)  # being written right now
            continue
        if holder is not None and _held(holder, path):
            since = time.strftime("%H:%M:%S", time.localtime(holder["since"]))
            raise CharframeError(
                f"{what} is already being run by process {holder['pid']} on {holder['host']} (since {since}); "
                f"wait for it to finish, or delete {path} if that process is gone"
            )
        if holder is None:
            log.warning("%s: not a lock record charframe wrote (damaged or edited); taken over", path)
        elif holder["host"] != socket.gethostname():
            log.warning("%s: left by process %d on %s, untouched for %.0f s; taken over", path, holder["pid"],
                        holder["host"], time.time() - _mtime(path))
        path.unlink(missing_ok=True)  # left by a dead process (or damaged): take it over
    else:
        raise CharframeError(f"{path}: could not take the run lock of {what}; delete the file and start again")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), name=f"run.lock {what}", daemon=True)
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(CharframeError):
            if _ours(_holder(path)):
                path.unlink(missing_ok=True)


def _ours(holder: dict | None) -> bool:
    return holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()


def _held(holder: dict, path: Path) -> bool:
    """Whether the lock's holder may still be running: on this host its PID lives; on another host it touched
    the lock within `STALE_AFTER` seconds."""
    if holder["host"] == socket.gethostname():
        return pid_alive(holder["pid"])
    return time.time() - _mtime(path) < STALE_AFTER


def _heartbeat(path: Path, stop: threading.Event) -> None:
    """Touch the lock every `HEARTBEAT` seconds while it is ours, so other hosts see its holder alive."""
    while not stop.wait(HEARTBEAT):
        with contextlib.suppress(OSError, CharframeError):
            if _ours(_holder(path)):
                os.utime(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
