"""`charframe watch`: keep a project's datasets prepared (and with `train`, its characters run) as files arrive.

Events from watchdog (OS events, or `PollingObserver` for network drives) only mark a dataset folder or a
character file as changed; nothing is done while files keep arriving. A key is acted on once it has been quiet
for `debounce` seconds AND its folder looks the same on two looks `settle` seconds apart (image count, total
size, newest mtime): a large file still being copied keeps growing, so it is not captioned half-written, and a
burst of a thousand files gives one prepare per dataset. Only image files and folder creation/removal count —
the captions, TOMLs and manifests that preparing writes do not wake the watcher up again.

With `train`, a changed character file, group file or dataset queues a `run` of the characters it belongs
to. The queue is a file (`LoRAWork/watch-queue.json`): jobs run one at a time, a job leaves the queue only when
it finished, so a watcher stopped by Ctrl-C (or a crash) continues it when started again. A character file
edited while its own job runs is queued again at once (it runs after the job, with the edit). Nothing is lost
between watchers either: at start the watcher prepares every dataset folder whose captions or TOML are not
current, and with `train` queues every target the pipeline's records say is stale (the dry run of `rerun --all`).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from charframe.character import CHARACTERS_DIR
from charframe.project import WORK_DIR
from charframe.dataset.naming import IMAGE_EXTENSIONS
from charframe.dataset.prepare import prepare_dirs
from charframe.errors import CharframeError
from charframe.pipeline.runner import Options, all_targets, plan_targets, rerun, summary_table
from charframe.pipeline.stages import target_jobs
from charframe.pipeline.steps import STEPS, Step
from charframe.project import project_dirs
from charframe.util.files import atomic_write_text

log = logging.getLogger(__name__)

QUEUE_FILE = "watch-queue.json"
#: a dataset folder's name: `N_name` (other folders of LoRAInput/, e.g. of models, are not prepared at start)
_REPEATS = re.compile(r"^\d+_")


class JobQueue:
    """Targets (character or group files) waiting to run, oldest first, kept in a JSON file. The job running is
    at the head until it finished; the same target added meanwhile waits once more behind it (an edit made
    during its own run is not lost). Safe to use from the observer's thread and the main one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.running: str | None = None
        self._lock = threading.Lock()

    def items(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [str(x) for x in data.get("jobs", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, AttributeError):
            log.warning("%s: unreadable queue file; starting with an empty queue (the file is left as it is)", self.path)
            return []

    def _write(self, jobs: list[str]) -> None:
        atomic_write_text(self.path, json.dumps({"jobs": jobs}, indent=1))

    def add(self, target: str) -> bool:
        with self._lock:
            jobs = self.items()
            waiting = jobs[1:] if self.running is not None and jobs[:1] == [self.running] else jobs
            if target in waiting:
                return False
            self._write(jobs + [target])
            return True

    def done(self, target: str) -> None:
        """The first entry of `target` (the one that ran) leaves the queue."""
        with self._lock:
            jobs = self.items()
            if target in jobs:
                jobs.remove(target)
            self._write(jobs)


@dataclass
class _Pending:
    last_event: float
    snapshot: tuple | None = None
    snapshot_at: float = 0.0


def _snapshot(folder: Path) -> tuple | None:
    """(image count, total bytes, newest mtime) below `folder`; None when it is gone."""
    if not folder.is_dir():
        return None
    count = size = newest = 0
    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            try:
                st = p.stat()
            except OSError:
                continue
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return count, size, newest


@dataclass
class Watcher:
    """The decisions of the watcher, without the observer: `note` paths, `tick` regularly."""

    root: Path
    train: bool = False
    debounce: float = 2.0
    settle: float = 0.5
    prepare: Callable[[list[Path]], object] = field(default=lambda dirs: prepare_dirs(dirs))
    table: Sequence[Step] = STEPS
    options: Options = Options(progress=False)
    pending: dict[Path, _Pending] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dirs = project_dirs(self.root)
        self.characters = self.root / CHARACTERS_DIR
        self.queue = JobQueue(self.root / WORK_DIR / QUEUE_FILE)
        self._lock = threading.Lock()

    def key_for(self, path: Path, is_dir: bool) -> Path | None:
        """The dataset folder (`LoRAInput/<N_name>`) or character file a changed path belongs to, if any."""
        try:
            rel = path.relative_to(self.dirs.input)
        except ValueError:
            if path.parent == self.characters and path.suffix == ".toml" and self.train:
                return path
            return None
        if not rel.parts or (len(rel.parts) == 1 and not is_dir):
            return None  # LoRAInput itself, or a model file lying in it
        if not is_dir and path.suffix.lower() not in IMAGE_EXTENSIONS:
            return None  # captions, TOMLs, manifests: written by prepare itself
        return self.dirs.input / rel.parts[0]

    def note(self, path: str | Path, is_dir: bool = False) -> None:
        key = self.key_for(Path(path), is_dir)
        if key is None:
            return
        if key.suffix == ".toml" and key.parent == self.characters:
            if key.is_file():
                self.enqueue([key], f"{key.name} changed")  # at once: even while a job runs, it is in the file
            return
        with self._lock:
            self.pending[key] = _Pending(time.monotonic())

    def catch_up(self) -> None:
        """What changed while no watcher ran: prepare every dataset folder that is not current; with `train`,
        queue every target the pipeline's records call stale."""
        if self.dirs.input.is_dir():
            for folder in sorted(p for p in self.dirs.input.iterdir() if p.is_dir() and _REPEATS.match(p.name)):
                try:
                    self.prepare([folder])
                except (CharframeError, OSError) as e:
                    log.error("%s: %s (still watching)", folder, e)
        if not self.train:
            return
        for path, plan in plan_targets(all_targets(self.root), self.options, self.table):
            if isinstance(plan, str):
                log.error("%s", plan)
            elif any(p.may_run for p in plan):
                self.enqueue([path], "changed while not watched")

    def tick(self) -> None:
        """Act on every key that has been quiet and settled; then run queued jobs (one at a time)."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for key, p in list(self.pending.items()):
                if now - p.last_event < self.debounce:
                    continue
                snap = _snapshot(key) if key.parent == self.dirs.input else (key.stat().st_mtime_ns if key.exists() else None,)
                if p.snapshot is None and p.snapshot_at == 0.0 or snap != p.snapshot:
                    p.snapshot, p.snapshot_at = snap, now  # look again after `settle`
                    continue
                if now - p.snapshot_at < self.settle:
                    continue
                ready.append(key)
                del self.pending[key]
        for key in ready:
            self.dispatch(key)
        self.run_queue()

    def dispatch(self, key: Path) -> None:
        if key.suffix == ".toml":
            self.enqueue([key], f"{key.name} changed")
            return
        if not key.is_dir():
            log.warning("%s: the dataset folder was deleted while watched; nothing to prepare (still watching)", key)
            return
        try:
            self.prepare([key])
            log.info("%s: prepared (captions + TOML)", key)
        except Exception as e:  # noqa: BLE001 - one bad folder never stops the watcher
            log.error("%s: %s (still watching)", key, _said(e))
            return
        if self.train:
            self.enqueue(self.targets_of(key), f"{key.name} changed")

    def targets_of(self, dataset: Path) -> list[Path]:
        """Character and group files whose stages train on `dataset`."""
        found = []
        for target in all_targets(self.root):
            try:
                if any(j.dataset == dataset for j in target_jobs(target, "group" if target.name.endswith(".group.toml") else "all")):
                    found.append(target)
            except CharframeError:
                continue
        if not found:
            log.info("%s: no character file trains on this dataset; nothing queued", dataset)
        return found

    def enqueue(self, targets: list[Path], why: str) -> None:
        for t in targets:
            if self.queue.add(str(t)):
                log.info("queued %s (%s)", t.name, why)

    def run_queue(self) -> None:
        """Run queued jobs oldest first; a job leaves the queue when it has finished (failed ones too: the
        summary says why, and the next change queues it again)."""
        while jobs := self.queue.items():
            target = Path(jobs[0])
            self.queue.running = jobs[0]
            try:
                if target.is_file():
                    try:
                        report = rerun([target], self.options, self.table)
                        log.info("%s\n%s", target.name, summary_table(report))
                    except Exception as e:  # noqa: BLE001 - a refused or failing job leaves the queue; watching goes on
                        log.error("%s: %s (still watching)", target.name, _said(e))
                else:
                    log.warning("%s: queued, but the file is gone; dropped from the queue", target)
                self.queue.done(jobs[0])
            finally:
                self.queue.running = None


def _said(e: BaseException) -> str:
    """The one-line message of an error a job raised: charframe's own as it is, anything else named by its type."""
    if isinstance(e, CharframeError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0][:300]
    if not isinstance(e, OSError):
        log.debug("unexpected error", exc_info=True)
        return f"unexpected {type(e).__name__}: {first}"
    return first


def _handler(watcher: Watcher):
    from watchdog.events import DirModifiedEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if isinstance(event, DirModifiedEvent) or event.event_type in ("opened", "closed_no_write"):
                return  # a folder's own mtime changes whenever prepare writes a caption into it
            watcher.note(event.src_path, event.is_directory)
            if getattr(event, "dest_path", ""):
                watcher.note(event.dest_path, event.is_directory)

    return Handler()


def watch(root: Path, *, train: bool = False, poll: bool = False, debounce: float = 2.0, settle: float = 0.5,
          stop: threading.Event | None = None, tick: float = 0.2, **kwargs) -> int:
    """Watch `root` until Ctrl-C (or `stop` is set); returns 0 after a clean stop."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    watcher = Watcher(root, train=train, debounce=debounce, settle=settle, **kwargs)
    watcher.dirs.input.mkdir(parents=True, exist_ok=True)
    observer = PollingObserver(timeout=1.0) if poll else Observer()
    handler = _handler(watcher)
    observer.schedule(handler, str(watcher.dirs.input), recursive=True)
    if train and watcher.characters.is_dir():
        observer.schedule(handler, str(watcher.characters), recursive=False)
    stop = stop or threading.Event()
    busy = threading.Event()  # set while preparing or running a job: Ctrl-C must interrupt that work

    def interrupt(signum: int, frame: object) -> None:
        stop.set()  # idle: the loop ends at its next wake-up, never in the middle of the observer or a file write
        if busy.is_set():
            raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    observer.start()
    log.info("watching %s%s (%s); Ctrl-C stops", watcher.dirs.input, " and " + str(watcher.characters) if train else "",
             "polling" if poll else "OS events")
    try:
        busy.set()
        watcher.catch_up()  # what changed while no watcher ran
        watcher.run_queue()  # what a previous watcher left
        while not stop.is_set():
            busy.clear()
            if stop.wait(tick):
                break
            busy.set()
            watcher.tick()
    except KeyboardInterrupt:
        pass
    finally:
        busy.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)
        observer.stop()
        observer.join(timeout=5)
    log.info("stopped; %d queued job(s) kept in %s for the next start", len(watcher.queue.items()), watcher.queue.path)
    return 0
