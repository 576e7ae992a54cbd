"""`charframe watch` with a REAL watchdog observer: bursts, settling, deleted folders, the job queue, Ctrl-C."""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.dataset.prepare import prepare_dirs
from charframe.pipeline.runner import Options
from charframe.pipeline.watch import JobQueue, Watcher, watch
from project_builder import character_toml, copy_project

REPO = Path(__file__).resolve().parents[2]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Recorder:
    """The real prepare, counting its calls per dataset."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, dirs):
        self.calls += [Path(d).name for d in dirs]
        return prepare_dirs(dirs)


def _wait(cond, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def watching(tmp_path: Path, request):
    poll = getattr(request, "param", False)
    root = tmp_path / "proj"
    (root / "LoRAInput").mkdir(parents=True)
    rec, stop = Recorder(), threading.Event()
    t = threading.Thread(target=watch, args=(root,), kwargs=dict(poll=poll, debounce=0.3, settle=0.2, stop=stop,
                                                                  tick=0.05, prepare=rec))
    t.start()
    time.sleep(0.3)
    yield root, rec
    stop.set()
    t.join(10)
    assert not t.is_alive()


def test_burst_of_1000_files_prepares_each_dataset_once(watching, caplog) -> None:
    root, rec = watching
    data = _png()
    for ds in ("4_krnk", "2_tyank"):
        for sub in ("f0064", "f0128"):
            (root / "LoRAInput" / ds / f"{ds[2:]} girl_{sub}").mkdir(parents=True)
    for i in range(1000):
        ds = ("4_krnk", "2_tyank")[i % 2]
        folder = root / "LoRAInput" / ds / f"{ds[2:]} girl_{('f0064', 'f0128')[i // 2 % 2]}"
        (folder / f"f{i % 3}{i % 5}-{i:04d}.png").write_bytes(data)
    assert _wait(lambda: len(list((root / "LoRAInput").rglob("*.txt"))) == 1000)
    time.sleep(1.0)  # captions and TOMLs written by prepare must not wake the watcher up again
    assert sorted(rec.calls) == ["2_tyank", "4_krnk"]
    assert len(list((root / "LoRAInput").rglob("*.txt"))) == 1000
    assert (root / "LoRAInput" / "4_krnk" / "4_krnk.toml").is_file()

    # a dataset folder deleted while watched: a clear message, and the watcher goes on
    with caplog.at_level(logging.INFO, logger="charframe"):
        shutil.rmtree(root / "LoRAInput" / "2_tyank")
        assert _wait(lambda: "deleted while watched" in caplog.text)
        (root / "LoRAInput" / "4_krnk" / "krnk girl_f0064" / "f20-new.png").write_bytes(data)
        new_caption = root / "LoRAInput" / "4_krnk" / "krnk girl_f0064" / "f20-new.txt"
        assert _wait(new_caption.exists) and rec.calls.count("4_krnk") == 2
    assert (root / "LoRAInput" / "4_krnk" / "krnk girl_f0064" / "f20-new.txt").read_text().startswith("krnk, ")


@pytest.mark.parametrize("watching", [True], indirect=True)
def test_poll_observer_prepares_a_copied_dataset(watching) -> None:
    root, rec = watching
    src = REPO / "examples" / "4_demo"
    shutil.copytree(src, root / "LoRAInput" / "4_demo")
    assert _wait(lambda: len(list((root / "LoRAInput" / "4_demo").rglob("*.txt"))) == 45)
    assert rec.calls == ["4_demo"]
    assert len(list((root / "LoRAInput" / "4_demo").rglob("*.txt"))) == 45


def test_a_file_still_growing_is_not_prepared_until_it_settles(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    folder = root / "LoRAInput" / "4_krnk" / "krnk girl_f0064"
    folder.mkdir(parents=True)
    rec = Recorder()
    w = Watcher(root, debounce=0.0, settle=0.3, prepare=rec)
    data = _png()
    path = folder / "f00.png"
    with open(path, "wb") as f:
        for i in range(6):  # a slow copy: a chunk every 0.1 s, no events seen in between (no observer here)
            f.write(data[i * len(data) // 6:(i + 1) * len(data) // 6])
            f.flush()
            w.note(path) if i == 0 else None
            w.tick()
            time.sleep(0.1)
    assert rec.calls == []
    assert _wait(lambda: (w.tick(), rec.calls == ["4_krnk"])[1], 5)


def test_train_queues_runs_in_a_file_and_a_restart_continues(built, tmp_path: Path) -> None:
    root = copy_project(built[0], tmp_path / "proj")
    char = root / "Characters" / "tyank.toml"
    char.write_text(character_toml("tyank", "kps", "kimono", prompt="1girl, tyank, red eyes"))
    queue = JobQueue(root / "LoRAWork" / "watch-queue.json")
    queue.add(str(char))  # left by a watcher that was stopped
    w = Watcher(root, train=True, debounce=0.0, settle=0.0,
                options=Options(stage="face", until_step="prepare", progress=False))
    w.run_queue()  # the real steps: generate → clean → pick → export → prepare of tyank's face set
    assert queue.items() == []
    with Image.open(root / "LoRAWork" / "tyank" / "face" / "raw" / "f00-0.png") as im:
        assert "red eyes" in im.info["parameters"]
    # a changed character file queues its run again; a changed dataset queues the characters that use it
    w.dispatch(char)
    assert queue.items() == [str(char)]
    queue.done(str(char))
    w.dispatch(root / "LoRAInput" / "4_tyank")
    assert queue.items() == [str(char)]


def test_an_edit_during_its_own_job_is_queued_at_once_and_survives_a_stop(tmp_path: Path) -> None:
    """Issue 19 point 10: the edit is in the queue file while the job still runs (a stop then keeps it)."""
    root = tmp_path / "proj"
    (root / "Characters").mkdir(parents=True)
    char = root / "Characters" / "krnk.toml"
    char.write_text(character_toml("krnk", "sf", "sailor uniform"))
    w = Watcher(root, train=True, debounce=5.0, settle=5.0)
    w.queue.add(str(char))
    w.queue.running = str(char)  # krnk's job runs …
    w.note(char)  # … and the user saves krnk.toml again: no debounce wait, straight into the file
    w.note(char)  # a second save while it waits adds nothing more
    assert JobQueue(w.queue.path).items() == [str(char), str(char)]
    w.queue.done(str(char))  # the job that was running ends
    w.queue.running = None
    assert JobQueue(w.queue.path).items() == [str(char)]  # the edit still runs, in this watcher or the next


def test_a_restarted_watcher_catches_up_on_what_changed_while_it_was_stopped(built, tmp_path: Path) -> None:
    root = copy_project(built[0], tmp_path / "proj")
    from charframe.pipeline.runner import all_targets, rerun

    rerun(all_targets(root), Options(progress=False))  # a copy's first rerun only rewrites its TOMLs' paths
    (root / "Characters" / "tyank.toml").write_text(character_toml("tyank", "kps", "kimono, obi"))
    caption = root / "LoRAInput" / "4_krnk" / "krnk girl_f0064" / "f00.txt"
    caption.unlink()
    rec = Recorder()
    w = Watcher(root, train=True, prepare=rec, options=Options(progress=False))
    w.catch_up()
    assert caption.is_file() and "4_krnk" in rec.calls  # prepared again without any event
    # krnk is current again once prepared; tyank's outfit changed, and the group reads what tyank will rewrite
    assert w.queue.items() == [str(root / "Characters" / "tyank.toml"), str(root / "Characters" / "pair.group.toml")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_keeps_the_queue(tmp_path: Path, signum: int) -> None:
    """Ctrl-C (or SIGTERM from a service manager) while idle ends the watcher at its next wake-up, exit 0."""
    root = tmp_path / "proj"
    (root / "LoRAInput").mkdir(parents=True)
    queue = JobQueue(root / "LoRAWork" / "watch-queue.json")
    queue.add(str(root / "Characters" / "gone.toml"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "charframe", "watch", str(root)], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait(lambda: queue.items() == [], 60)  # the queue left by the previous watcher was worked through
        time.sleep(0.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "gone.toml: queued, but the file is gone" in err and "stopped; 0 queued job(s) kept" in err
