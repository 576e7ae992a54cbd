"""Tag and prepare dataset folders: captions beside every coded image, then the dataset TOML.

Captions are rewritten only when they change. A hidden manifest per folder
(`.charframe-captions.json`, see `charframe.util.manifest`) records every caption charframe wrote, so
after a rule change charframe knows its own old captions from a user's hand edits (its own are
updated; hand edits are kept and reported, and `force=True` replaces them after a `.bak` copy),
and a rerun confirms an unchanged caption with one `stat` instead of reading it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from charframe.dataset.captions import RuleSet, load_rules
from charframe.dataset.toml_writer import build_dataset_config, dataset_dirs, render_dataset_toml, save_dataset_toml
from charframe.errors import CharframeError
from charframe.util.files import atomic_write_bytes, backup_file, check_name_length
from charframe.util.manifest import Manifest, Status
from charframe.dataset.naming import parse_code, parse_subset_name
from charframe.project import find_project_root
from charframe.dataset.scan import ImageFolder, image_folders, require_dirs

log = logging.getLogger(__name__)

MANIFEST = ".charframe-captions.json"
CAPTION_EXTENSION = ".txt"
_WORKERS = 4  # caption writes are syscalls that release the GIL; overlap them


@dataclass
class TagReport:
    """What tagging did; `kept` lists hand-edited captions left alone (rerun with force to replace)."""

    folders: int = 0
    written: int = 0
    unchanged: int = 0
    skipped: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)

    def add(self, other: TagReport) -> None:
        self.folders += other.folders
        self.written += other.written
        self.unchanged += other.unchanged
        self.skipped += other.skipped
        self.kept += other.kept
        self.backups += other.backups


@dataclass
class PrepareReport:
    tag: TagReport
    tomls: list[Path]


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError:
        return None  # not our UTF-8 caption: treated as a hand edit


def tag_folder(folder: ImageFolder, rules: RuleSet, *, force: bool = False) -> TagReport:
    """Write the captions of one image folder (not recursive).

    The folder's manifest (`util.manifest`) records each caption charframe wrote, with the caption text as
    its parameter: an unchanged caption costs one `stat`; one charframe wrote before is updated when the
    rules change; a file charframe did not write (a hand edit) is kept unless `force` (after a `.bak`).
    """
    report = TagReport(folders=1)
    manifest = Manifest.load(folder.path / MANIFEST)
    folder_name = folder.path.name
    base = os.path.join(str(folder.path), "")
    written: set[str] = set()
    for name in folder.images:
        code = parse_code(name)
        if code is None:
            report.skipped.append(folder.path / name)
            continue
        txt_name = os.path.splitext(name)[0] + CAPTION_EXTENSION
        caption = rules.caption(code, folder_name)
        txt = base + txt_name
        if txt_name in folder.files:
            state = manifest.status(txt_name, params=caption)
            if state is Status.UP_TO_DATE:
                report.unchanged += 1  # ours, untouched since, and still right: not even read
                continue
            old = _read_text(txt)
            if old is not None and old.rstrip("\r\n") == caption:
                report.unchanged += 1
                manifest.record(txt_name, params=caption)
                continue
            if state is not Status.STALE:  # not a caption charframe wrote: a hand edit
                if not force:
                    report.kept.append(Path(txt))
                    continue
                report.backups.append(backup_file(txt))
        data = caption.encode("utf-8")
        # no fsync: a crash leaves the old or the new caption whole, and captions can be rebuilt from names
        st = atomic_write_bytes(txt, data, fsync=False, parents=False)
        report.written += 1
        written.add(txt_name)
        manifest.record(txt_name, params=caption, data=data, stat=st)
    manifest.forget_missing(present=folder.files | written)
    manifest.save()
    return report


def _warn_numeric_keywords(folders: list[ImageFolder]) -> None:
    for f in folders:
        kp = parse_subset_name(f.path).keyword_part
        if kp.isdigit():
            log.warning("%s: images directly in a dataset folder get the keyword %r from its name; put them in a subset folder such as %s", f.path, kp, f.path / "krnk girl_f0512")


def _check_writable_here(root: Path, real_root: Path, folder: ImageFolder) -> None:
    """Refuse before any writing: a folder reached through a link to outside `root` (`real_root`: resolved), or
    caption names too long."""
    real = folder.path.resolve()
    if real != real_root and real_root not in real.parents:
        raise CharframeError(
            f"{folder.path}: a link to {real}, outside {root}; charframe writes captions only inside the folder "
            f"you name: copy the images in, or tag {real} itself"
        )
    longest = max(folder.images, key=lambda n: len(n.rpartition(".")[0].encode("utf-8", "surrogateescape")))
    check_name_length(folder.path / (longest.rpartition(".")[0] + CAPTION_EXTENSION), "shorten the image's name")


def _jobs(roots: list[Path], rules: RuleSet | None, scans: dict[Path, list[ImageFolder]]) -> list[tuple[ImageFolder, RuleSet]]:
    """(folder, rules) pairs for every image folder below `roots`, each folder once."""
    jobs: dict[Path, tuple[ImageFolder, RuleSet]] = {}
    rule_cache: dict[Path, RuleSet] = {}
    for root in roots:
        folders = scans[root] if root in scans else image_folders(root)
        if not folders:
            raise CharframeError(f"{root}: no png/jpg/jpeg/webp images at or below this folder")
        if rules is None:
            project = find_project_root(root)
            if project not in rule_cache:
                rule_cache[project] = load_rules(project)
        _warn_numeric_keywords(folders)
        real_root = root.resolve()
        for f in folders:
            _check_writable_here(root, real_root, f)
            jobs.setdefault(f.path.absolute(), (f, rules or rule_cache[project]))
    return list(jobs.values())


def _run(jobs: list[tuple[ImageFolder, RuleSet]], force: bool, progress: bool) -> TagReport:
    report = TagReport()
    with tqdm(total=sum(len(f.images) for f, _ in jobs), unit="img", desc="tag", disable=not progress, leave=False) as bar:
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            for folder_report, (folder, _) in zip(pool.map(lambda job: tag_folder(job[0], job[1], force=force), jobs), jobs):
                report.add(folder_report)
                bar.update(len(folder.images))
    _log_report(report)
    return report


def tag_dirs(dirs: list[str | os.PathLike], *, rules: RuleSet | None = None, force: bool = False, progress: bool = False) -> TagReport:
    """Caption every coded image at or below each folder. `rules=None` uses each folder's project
    rules (`charframe.toml` of the project found from the folder). Paths are checked first."""
    return _run(_jobs(require_dirs(dirs), rules, {}), force, progress)


def _log_report(report: TagReport) -> None:
    by_folder: dict[Path, list[str]] = {}
    for p in report.skipped:
        by_folder.setdefault(p.parent, []).append(p.name)
    for folder, names in by_folder.items():
        log.info("%s: skipped %d image(s) without a code [fb][0-2][0-7]: %s", folder, len(names), ", ".join(names))
    for b in report.backups:
        log.warning("%s: hand-edited caption replaced (forced); the old one is kept as %s", b.parent / b.name.rsplit(".bak", 1)[0], b.name)
    if report.kept:
        log.warning(
            "%d caption(s) differ from the rules and look hand-edited; kept as they are: %s\n"
            "  change the rules (charframe.toml [captions]) or force replacing them (a .bak copy is kept)",
            len(report.kept), ", ".join(str(p) for p in report.kept),
        )
    log.info("captions: %d written, %d unchanged, %d kept, %d skipped, in %d folder(s)", report.written, report.unchanged, len(report.kept), len(report.skipped), report.folders)


def prepare_dirs(
    dirs: list[str | os.PathLike],
    *,
    rules: RuleSet | None = None,
    force: bool = False,
    vram: str = "default",
    relative_to: str | os.PathLike | None = None,
    progress: bool = False,
    family: str | None = None,
) -> PrepareReport:
    """Tag, then write the dataset TOML of each dataset folder (for the model `family`, SD1.x by default). Every
    TOML is checked (sizes,
    classes) before the first caption is written, so a bad folder leaves the disk as it was."""
    roots = require_dirs(dirs)
    datasets = dataset_dirs(roots)
    scans = {d: image_folders(d) for d in datasets}
    texts = [(d, render_dataset_toml(build_dataset_config(d, vram=vram, relative_to=relative_to, folders=scans[d], family=family))) for d in datasets]
    report = _run(_jobs(roots, rules, scans), force, progress)
    return PrepareReport(report, [save_dataset_toml(d, t) for d, t in texts])
