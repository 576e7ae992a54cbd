"""The run lock across hosts (issue 23): a project on a shared file system, steps run on other nodes. A PID says
nothing about another host, so a lock records its host and its holder keeps it fresh; a lock of another host is
honoured while fresh and taken over once stale; a lock is only ever removed by the process (and host) holding it."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.pipeline import lock
from charframe.pipeline.lock import LOCK_NAME, run_lock


def _write(folder: Path, host: str, pid: int = 4242, age: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host, "since": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_the_lock_records_pid_and_host(tmp_path: Path) -> None:
    with run_lock(tmp_path, "krnk") as path:
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not path.exists()


def test_a_fresh_lock_of_another_host_is_honoured_whatever_its_pid(tmp_path: Path) -> None:
    path = _write(tmp_path, "node-07", pid=999_999_999 % 2**31)  # no such process here: says nothing there
    with pytest.raises(CharframeError) as e:
        with run_lock(tmp_path, "krnk"):
            pass
    assert "krnk is already being run by process" in str(e.value) and "on node-07" in str(e.value)
    assert path.is_file()


def test_a_stale_lock_of_another_host_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, "node-07", age=lock.STALE_AFTER + 60)
    with caplog.at_level(logging.WARNING, logger="charframe.pipeline.lock"):
        with run_lock(tmp_path, "krnk") as path:
            assert json.loads(path.read_text())["host"] == socket.gethostname()
    assert "left by process 4242 on node-07, untouched for" in caplog.text and "taken over" in caplog.text


def test_the_holder_keeps_its_lock_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "HEARTBEAT", 0.05)
    with run_lock(tmp_path, "krnk") as path:
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.time() + 10
        while path.stat().st_mtime < old + 60 and time.time() < deadline:
            time.sleep(0.05)
        assert time.time() - path.stat().st_mtime < 30  # touched again: other hosts see a live holder


def test_a_lock_taken_over_by_another_host_is_not_removed_by_the_first_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path, "krnk") as path:
        _write(tmp_path, "node-07", pid=os.getpid())  # same PID, other host: not ours
    assert json.loads(path.read_text())["host"] == "node-07"
