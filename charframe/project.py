"""Where a charframe project lives: its root folder, its `charframe.toml`, and its standard folders.

A project is the folder that holds `LoRAInput/` (and usually `FaceTemplate/`, `BodyTemplate/`,
`LoRAOutput/`, `LoRALog/`). Commands find it from the folder the user dropped or named, not from the
current directory, because a Windows drag-and-drop launcher starts in an arbitrary directory.

`charframe.toml` is read and validated as a whole, once, into a `ProjectConfig` of typed sections
(`load_project`): a misspelt section (`[captionz]`) or key, a wrong type (`replace = "no"`), a number out
of range, a binary or non-UTF-8 file — each is one message naming the file, line and key, before any
command starts work. Consumers take their typed section from the record; `load_project_config` still
gives the raw (validated) tables for code that reads plain data.

`[paths]` values pass the containment check of `util.paths` when read: a relative folder stays inside the
project (no `..`, no name Windows refuses); an absolute one is the user's explicit choice of a folder
elsewhere (`output = "D:/loras"`) and counts as part of the project for writing (`write_roots`).

Sections: `[paths]` folder names, `[captions]` caption rule edits, `[vram_profiles.NAME]` batch sizes,
`[block_presets]` merge presets, `[kohya]` the sd-scripts checkout, `[cluster]` where `run`/`rerun` send their
jobs (Ray, Slurm), `[identity]` the CCIP identity model, `[score]` how checkpoints are judged. A new section is a new
field here.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PureWindowsPath
from typing import Any, Literal, Mapping

from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.recycle import Recycler
from charframe.util.files import user_cache_dir
from charframe.util.paths import relative_problem
from charframe.util.schema import Source, limits, parse, where

PROJECT_FILE = "charframe.toml"
#: per-character working folders (candidates, cleaned copies, picks, step records), beside LoRAInput/
WORK_DIR = "LoRAWork"
#: where replaced or dropped outputs go (`util.recycle`): LoRAWork/replaced/<run stamp>/<path>
REPLACED_DIR = "replaced"

#: Standard folder names (CONVENTIONS §1), keyed by the names used in `[paths]` of charframe.toml.
DEFAULT_DIRS: dict[str, str] = {
    "input": "LoRAInput",
    "output": "LoRAOutput",
    "log": "LoRALog",
    "face_templates": "FaceTemplate",
    "body_templates": "BodyTemplate",
    "embeddings": "embeddings",  # textual-inversion embeddings prompts may call (WebUI's folder name)
}

#: Training size classes WIDTH_HEIGHT (CONVENTIONS §4), the keys of a VRAM profile.
SIZE_CLASS_NAMES = tuple(f"{w}_{h}" for w in ("LOW", "MID", "HIGH") for h in ("LOW", "MID", "HIGH"))
_BATCH = limits(min=1, max=4096, help="batch size")
#: preview seeds: at least one (an empty list would replace a good grid by an empty one), each a torch seed
SEEDS = limits(min=0, max=2**32 - 1, min_items=1)


@dataclass(frozen=True)
class PathsTable:
    """`[paths]`: the standard folders, relative to the project root or absolute."""

    input: str = DEFAULT_DIRS["input"]
    output: str = DEFAULT_DIRS["output"]
    log: str = DEFAULT_DIRS["log"]
    face_templates: str = DEFAULT_DIRS["face_templates"]
    body_templates: str = DEFAULT_DIRS["body_templates"]
    embeddings: str = DEFAULT_DIRS["embeddings"]


@dataclass(frozen=True)
class RuleEdit:
    """One `[[captions.rule]]`: a new rule, or the fields of an existing one to change (by name).

    A condition is a value, a list of values, or "any"; its allowed values are checked by the caption rules.
    """

    name: str
    tags: tuple[str, ...] | None = None
    kind: str | tuple[str, ...] | None = None
    elevation: int | str | tuple[int, ...] | None = None
    azimuth: int | str | tuple[int, ...] | None = None
    folder: str | None = None
    rest: str | None = None
    before: str | None = None
    after: str | None = None


@dataclass(frozen=True)
class CaptionEdits:
    """`[captions]` (or a rules file): start from scratch (`replace`), `remove` rules by name, edit/add rules."""

    replace: bool = False
    remove: tuple[str, ...] = ()
    rule: tuple[RuleEdit, ...] = ()


@dataclass(frozen=True)
class VramProfile:
    """`[vram_profiles.NAME]`: batch size per size class; `other` covers the classes not listed."""

    LOW_LOW: int | None = field(default=None, metadata=_BATCH)
    LOW_MID: int | None = field(default=None, metadata=_BATCH)
    LOW_HIGH: int | None = field(default=None, metadata=_BATCH)
    MID_LOW: int | None = field(default=None, metadata=_BATCH)
    MID_MID: int | None = field(default=None, metadata=_BATCH)
    MID_HIGH: int | None = field(default=None, metadata=_BATCH)
    HIGH_LOW: int | None = field(default=None, metadata=_BATCH)
    HIGH_MID: int | None = field(default=None, metadata=_BATCH)
    HIGH_HIGH: int | None = field(default=None, metadata=_BATCH)
    other: int | None = field(default=None, metadata=_BATCH)

    def missing(self) -> list[str]:
        """Classes with no batch size (empty when `other` is given)."""
        return [] if self.other is not None else [c for c in SIZE_CLASS_NAMES if getattr(self, c) is None]

    def batch_sizes(self) -> dict[str, int]:
        return {c: getattr(self, c) or self.other or 1 for c in SIZE_CLASS_NAMES}


@dataclass(frozen=True)
class KohyaTable:
    """`[kohya]`: the sd-scripts checkout and its Python (default: `<root>/sd-scripts` and its venv)."""

    dir: str | None = None
    python: str | None = None


@dataclass(frozen=True)
class PreviewTable:
    """`[preview]`: overrides of charframe/data/preview.toml for the preview grids (charframe.pipeline.preview)."""

    scenes: tuple[str, ...] | None = field(default=None, metadata=limits(min_items=1))
    seeds: tuple[int, ...] | None = field(default=None, metadata=SEEDS)
    steps: int | None = field(default=None, metadata=limits(min=1, max=200))
    size: int | None = field(default=None, metadata=limits(min=32, max=2048))
    cfg: float | None = field(default=None, metadata=limits(min=1, max=30))
    tiny_steps: int | None = field(default=None, metadata=limits(min=1, max=200))
    tiny_size: int | None = field(default=None, metadata=limits(min=32, max=2048))
    #: LoRA strengths of the sweep beside the grid ([] = no sweep)
    strengths: tuple[float, ...] | None = field(default=None, metadata=limits(min=-4, max=4))


@dataclass(frozen=True)
class HistoryTable:
    """`[history]`: how many earlier versions of each finished LoRA set are kept (LoRAOutput/<out>/history/)."""

    keep: int = field(default=5, metadata=limits(min=1, max=1000))


EXECUTORS = ("local", "ray", "slurm")
#: Slurm's time limit forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class ClusterTable:
    """`[cluster]`: where `run` and `rerun` send their jobs (`charframe.pipeline.executors`), and what a job asks for.

    `address` is Ray's ("" = a Ray instance on this machine, "auto" = the running cluster, "ray://head:10001");
    `partition`, `time`, `mem_gb`, `account`, `setup` are Slurm's (`setup`: shell lines a job runs first, e.g.
    "source /shared/venv/bin/activate"); `gpus` per GPU job (Slurm) or GPU step (Ray), `cpus` per job or step;
    `logs`: the job scripts, logs and results of submitit, on the shared file system (relative = to the project)."""

    executor: Literal["local", "ray", "slurm"] = "local"
    address: str = ""
    partition: str = ""
    gpus: int = field(default=1, metadata=limits(min=0, max=64))
    cpus: int = field(default=4, metadata=limits(min=1, max=1024))
    time: int | str = 240
    mem_gb: int = field(default=0, metadata=limits(min=0, max=65536, help="0 = the partition's default"))
    account: str = ""
    setup: tuple[str, ...] = ()
    logs: str = "LoRAWork/cluster"

    @property
    def minutes(self) -> int:
        """`time` in minutes (Slurm's forms: 90, "1:30:00", "2-00:00:00")."""
        if isinstance(self.time, int):
            return self.time
        return slurm_minutes(self.time) or 0


def slurm_minutes(text: str) -> int | None:
    """Minutes of a Slurm time limit (`90`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`); None if malformed."""
    m = _SLURM_TIME.match(text.strip())
    if not m:
        return None
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is None:
        if b is None:
            return a                                  # minutes
        if c is None:
            return a + (b + 59) // 60                 # MM:SS
        return a * 60 + b + (c + 59) // 60            # HH:MM:SS
    return days * 1440 + a * 60 + (b or 0) + ((c or 0) + 59) // 60


@dataclass(frozen=True)
class IdentityTable:
    """`[identity]`: the CCIP identity model (charframe.models.ccip) that picks and scored checkpoints use.

    `model`: "auto" (the default model when its files are in the Hugging Face cache, else identity is not scored),
    "none", a CCIP model name, or a folder holding its three files. `threshold`: the "same character" limit of the
    CCIP difference (0 = the model's own, from its metrics.json)."""

    model: str = "auto"
    threshold: float = field(default=0.0, metadata=limits(min=0, max=10, help="0 = the model's threshold"))


@dataclass(frozen=True)
class ScoreTable:
    """`[score]`: how the score step judges a stage's checkpoints (charframe.pipeline.score).

    Pictures of each checkpoint: the `[preview]` scenes, plus the character at the angle `codes` (elevation and
    azimuth digits, taken with the stage's set letter: "02" → f02 or b02), at `seeds` (default: the first preview
    seed only — every picture is a full sampling run, and a checkpoint's are drawn again for each checkpoint) and
    `steps` sampling steps (0 = the preview's). The best step is the one with the lowest mean identity difference;
    steps within `tie` of it count as equal and the earliest of them wins. `tagger`: "none", or a WD14 tagger
    (charframe.models.tagger: a name in the Hugging Face cache, or a folder) that scores prompt adherence; a step
    whose adherence is under `adherence` is left out of the choice."""

    codes: tuple[str, ...] = ("00", "02", "12")
    seeds: tuple[int, ...] = field(default=(), metadata=limits(min=0, max=2**32 - 1))
    steps: int = field(default=0, metadata=limits(min=0, max=200, help="0 = the preview's steps"))
    tie: float = field(default=0.005, metadata=limits(min=0, max=1))
    tagger: str = "none"
    adherence: float = field(default=0.5, metadata=limits(min=0, max=1, help="the adherence floor; 0 = none"))


@dataclass(frozen=True)
class ProjectConfig:
    """Every section of `charframe.toml`, validated; absent sections have their defaults."""

    paths: PathsTable = field(default_factory=PathsTable)
    captions: CaptionEdits | None = None
    vram_profiles: dict[str, VramProfile] = field(default_factory=dict)
    block_presets: dict[str, str | tuple[float, ...]] = field(default_factory=dict)
    kohya: KohyaTable = field(default_factory=KohyaTable)
    preview: PreviewTable = field(default_factory=PreviewTable)
    history: HistoryTable = field(default_factory=HistoryTable)
    cluster: ClusterTable = field(default_factory=ClusterTable)
    identity: IdentityTable = field(default_factory=IdentityTable)
    score: ScoreTable = field(default_factory=ScoreTable)
    #: the file it was read from ("" when there is none) and its tables as written (for plain-data readers)
    file: str = field(default="", metadata={"skip": True}, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, metadata={"skip": True}, compare=False, repr=False)

    def table(self, name: str) -> dict[str, Any]:
        """The section `name` as written in the file (validated), `{}` when absent: for plain-data readers."""
        if name not in {f.name for f in fields(self)} - {"file", "raw"}:
            raise KeyError(f"charframe.toml has no section {name!r}")
        return dict(self.raw.get(name, {}))


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """Nearest ancestor of `start` (itself included) holding `charframe.toml` or `LoRAInput/`.

    Falls back to the current directory when no ancestor qualifies, so a bare folder still works.
    """
    here = Path(start if start is not None else Path.cwd()).absolute()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / PROJECT_FILE).is_file() or (candidate / DEFAULT_DIRS["input"]).is_dir():
            return candidate
    return Path.cwd().absolute()


def parse_project_config(data: Mapping[str, Any], source: Source | str) -> ProjectConfig:
    """Validate parsed `charframe.toml` data (unknown sections and keys, types, ranges) as a ProjectConfig."""
    config = parse(ProjectConfig, data, source)
    src = source if isinstance(source, Source) else Source(str(source))
    for key in DEFAULT_DIRS:
        problem = path_problem(getattr(config.paths, key))
        if problem:
            raise CharframeError(f"{where(src, ('paths',), key)}: {getattr(config.paths, key)!r} {problem}")
    _check_cluster(config.cluster, src)
    for name, profile in config.vram_profiles.items():
        if profile.missing():
            raise CharframeError(
                f"{src.path}: [vram_profiles.{name}] gives no batch size for {', '.join(profile.missing())}; "
                "list every class or add other = N"
            )
    return ProjectConfig(**{f.name: getattr(config, f.name) for f in fields(config) if f.name not in ("file", "raw")},
                         file=src.path, raw=dict(data))


def _check_cluster(cluster: ClusterTable, src: Source) -> None:
    if not 1 <= cluster.minutes <= 525600:
        raise CharframeError(f"{where(src, ('cluster',), 'time')}: {cluster.time!r} is not a time limit; give minutes "
                             "(240, at most a year) or Slurm's form (\"4:00:00\", \"1-00:00:00\")")
    problem = path_problem(cluster.logs)
    if problem:
        raise CharframeError(f"{where(src, ('cluster',), 'logs')}: {cluster.logs!r} {problem}")


def path_problem(value: str) -> str | None:
    """Why a `[paths]` value cannot name a project folder (None when it can): a relative one must stay inside
    the project, each of its folder names valid everywhere; an absolute one is taken as the user's choice."""
    fix = "; give a folder inside the project (like LoRAInput) or an absolute path to a folder elsewhere"
    if not value.strip() or Path(value) == Path("."):
        return "names the project folder itself" + fix
    if "\0" in value:
        return "holds a NUL character" + fix
    if Path(os.path.expanduser(value)).is_absolute():
        return None
    if os.name != "nt" and PureWindowsPath(value).drive:
        return "is a Windows drive path; on this system give an absolute path such as /data/loras"
    problem = relative_problem(value)
    return problem + fix if problem else None


@functools.lru_cache(maxsize=32)
def _load_cached(path: str, size: int, mtime_ns: int) -> ProjectConfig:
    data, text = tomlio.read(path, PROJECT_FILE)
    return parse_project_config(data, Source(path, text))


def load_project(root: str | os.PathLike) -> ProjectConfig:
    """The validated `charframe.toml` of the project at `root` (defaults when there is none).

    Read once per change of the file: every consumer asks again cheaply.
    """
    path = Path(root) / PROJECT_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return ProjectConfig()
    except OSError as e:
        raise CharframeError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.is_dir():
        raise CharframeError(f"{path}: is a folder; the project file must be a TOML file")
    return _load_cached(str(path), st.st_size, st.st_mtime_ns)


def load_project_config(root: str | os.PathLike) -> dict[str, Any]:
    """The tables of `charframe.toml` as written, validated first (`{}` when there is none).

    Plain-data access for older readers; new code uses `load_project(root)` and its typed sections.
    """
    return dict(load_project(root).raw)


def project_dirs(root: str | os.PathLike, config: ProjectConfig | Mapping[str, Any] | None = None) -> ProjectDirs:
    """Standard folders of the project at `root`; `[paths]` in charframe.toml may rename them.

    Example `charframe.toml`: ``[paths]`` ``output = "D:/loras"`` (relative paths are from the root).
    """
    root = Path(root).absolute()
    if config is None:
        config = load_project(root)
    elif not isinstance(config, ProjectConfig):
        config = parse_project_config(config, str(root / PROJECT_FILE))
    resolved = {key: root / os.path.expanduser(getattr(config.paths, key)) for key in DEFAULT_DIRS}
    return ProjectDirs(root=root, **resolved)


def write_roots(root: str | os.PathLike, config: ProjectConfig | None = None) -> tuple[Path, ...]:
    """Where a command working on the project at `root` may write (`util.files.confine_writes`): the project,
    its standard folders where they really are (one may be a link, or an absolute `[paths]` folder elsewhere),
    and charframe's own cache. The project root comes first (messages name it)."""
    dirs = project_dirs(root, config)
    return (dirs.root, dirs.input, dirs.output, dirs.log, dirs.face_templates, dirs.body_templates, user_cache_dir())


@dataclass(frozen=True)
class ProjectDirs:
    """Absolute standard folders of one project (they need not exist yet)."""

    root: Path
    input: Path
    output: Path
    log: Path
    face_templates: Path
    body_templates: Path
    embeddings: Path

    @property
    def work(self) -> Path:
        return self.root / WORK_DIR

    def recycler(self) -> "Recycler":
        """A new run's bin for outputs that steps replace or drop (`LoRAWork/replaced/<stamp>/`)."""
        return Recycler(self.root, self.work / REPLACED_DIR)
