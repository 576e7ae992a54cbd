"""The stages of one character (face, then body per outfit) and of a group, as `StageJob`s (CONVENTIONS §5).

- face:  `LoRAInput/4_krnk/`, output `krnk`;
- body:  `LoRAInput/2_krnksf_krnk/` = the body images of outfit `sf` (generated with the face LoRA) + the
  face images again, output `krnksf`;
- group: a group file `Characters/<name>.group.toml` naming two or more characters and their outfits →
  `LoRAInput/1_krnksf_tyankkps_krnk_tyank/` = every member's body and face images, output `krnksf_tyankkps`.

Each job carries everything its steps need (characters, dataset folder, recipe, model, the training plan's
file names, the model family), so the step table stays a plain table. Its characters carry their model family's
defaults (`Character.for_family`: an SDXL character's recipes, export sizes and generation settings where its file
is silent); a group's members must share one family.

Pivotal tuning (`[training.pivotal] enabled = true` in the character file; off by default) goes into the plans:
face trains the keyword's embedding; body trains `<keyword><outfit>` and reuses the face LoRA's bundle (its
compressed file, the one the body images are generated with); a group reuses each member's body LoRA bundle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charframe.character import CHARACTERS_DIR, WORK_DIR, Character, StageRecipe, is_keyword, load_character
from charframe.errors import CharframeError
from charframe.families.family import DEFAULT
from charframe.lora.blocks import resolve_weights
from charframe.models.detect import character_family
from charframe.project import load_project_config, project_dirs
from charframe.training.plan import TrainPlan, make_plan
from charframe.util.schema import limits, parse, read_toml_file

STAGES = ("face", "body", "group")
GROUP_SUFFIX = ".group.toml"


@dataclass(frozen=True)
class Member:
    character: str
    outfit: str


@dataclass(frozen=True)
class GroupFile:
    """`Characters/<name>.group.toml`: `[[member]] character = "krnk"  outfit = "sf"` (two or more);
    `repeats` (default 1) and an optional `[training]` recipe (default: the first member's `training.group`)."""

    member: tuple[Member, ...]
    repeats: int = field(default=1, metadata=limits(min=1, max=1000))
    training: StageRecipe | None = None


@dataclass(frozen=True)
class Group:
    name: str
    path: Path
    members: tuple[tuple[Character, str], ...]
    repeats: int
    recipe: StageRecipe


@dataclass(frozen=True)
class StageJob:
    """One stage of one character or group: the unit the step table runs over."""

    stage: str                                  # face | body | group
    name: str                                   # face | body-sf | group
    owner: str                                  # keyword or group name: LoRAWork/<owner>/
    source: Path                                # the character or group file
    root: Path
    members: tuple[tuple[Character, str], ...]  # (character, outfit); outfit "" for face
    dataset: Path
    out: str
    recipe: StageRecipe
    plan: TrainPlan
    merge: tuple[str, tuple[float, ...]]        # (label, 26 block weights) of the recipe's preset
    face_lora: Path | None = None               # body: the compressed face LoRA the images are generated with
    family: str = DEFAULT                       # the base model's family (charframe.families): sd15, sdxl

    @property
    def character(self) -> Character:
        return self.members[0][0]

    @property
    def state_dir(self) -> Path:
        """Manifests and the run lock: `LoRAWork/<owner>/pipeline/`."""
        return state_dir(self.root, self.owner)

    @property
    def lora(self) -> Path:
        return Path(self.plan.io.output_dir) / self.plan.io.out / f"{self.plan.output_name}.{self.plan.io.save_model_as}"

    @property
    def merged(self) -> Path:
        return self.lora.with_name(f"{self.lora.stem}-{self.merge[0]}.safetensors")

    @property
    def compressed(self) -> Path:
        return self.merged.with_name(f"{self.merged.stem}-SvR{self.recipe.sv_ratio:g}.safetensors")

    @property
    def preview(self) -> Path:
        return self.lora.parent / f"{self.out}-{self.name}-preview.png"

    def sets(self) -> list[tuple[Character, str]]:
        """(character, image set) pairs exported into this stage's dataset: face → the face set; body and group →
        each member's body set, then its face set again."""
        if self.stage == "face":
            return [(self.character, "face")]
        return [pair for c, o in self.members for pair in ((c, c.set_name("b", o)), (c, "face"))]


def state_dir(root: Path, owner: str) -> Path:
    """`LoRAWork/<owner>/pipeline/`: the step manifests and the run lock of a character or group."""
    return root / WORK_DIR / owner / "pipeline"


def model_path(c: Character, key: str = "model") -> str | None:
    """The character's base model (or VAE) as an absolute path; None = the tiny demo model. Missing → clear error."""
    value = getattr(c.generation, key)
    p = c.resolve(value)
    if p is None:
        return None
    if not p.exists():
        raise CharframeError(f"{c.path}: generation.{key}: {p} does not exist; put the file there or fix the path "
                             f"(\"\" = the tiny demo model)")
    return str(p)


def pivotal_options(c: Character, trigger: str | None, reuse: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The plan's `[plan.pivotal]` options for a stage of `c` (none while its pivotal tuning is off)."""
    p = c.training.pivotal
    if not p.enabled:
        return {}
    return dict(pivotal_trigger=trigger, pivotal_vectors=p.vectors, pivotal_init_text=p.init_text or c.class_,
                pivotal_lr=p.lr, pivotal_stop_at=p.stop_at, pivotal_reuse=[str(r) for r in reuse])


def _job(stage: str, name: str, owner: str, source: Path, members: tuple[tuple[Character, str], ...],
         dataset: str, out: str, recipe: StageRecipe, face_lora: Path | None = None,
         pivotal: dict[str, Any] | None = None) -> StageJob:
    c = members[0][0]
    family = character_family(c).id
    config = load_project_config(c.root)
    dirs = project_dirs(c.root, config)
    merge = resolve_weights(recipe.preset, c.root)
    plan = make_plan(recipe.logic, recipe.dim, recipe.lr, recipe.steps, dataset=dirs.input / dataset / f"{dataset}.toml",
                     out=out, model=model_path(c), vae=model_path(c, "vae"), clip_skip=c.generation.clip_skip,
                     family=c.generation.family or None, prediction=c.generation.prediction or None,
                     output_dir=str(dirs.output), logging_dir=str(dirs.log), **(pivotal or {}),
                     **({"save_every_n_steps": recipe.save_every} if recipe.save_every else {}))
    return StageJob(stage, name, owner, source, dirs.root, members, dirs.input / dataset, out, recipe, plan, merge,
                    face_lora, family)


def character_jobs(c: Character, stage: str = "all") -> list[StageJob]:
    """face, then body for each outfit (in file order), with the character's model-family defaults."""
    c = c.for_family(character_family(c))
    src = c.path or Path(f"{c.keyword}.toml")
    face = _job("face", "face", c.keyword, src, ((c, ""),), c.face_dataset(), c.keyword, c.training.face,
                pivotal=pivotal_options(c, c.keyword))
    jobs = [face] if stage in ("face", "all") else []
    if stage in ("body", "all"):
        jobs += [_job("body", c.set_name("b", o), c.keyword, src, ((c, o),), c.body_dataset(o), f"{c.keyword}{o}",
                      c.training.body, face.compressed, pivotal_options(c, f"{c.keyword}{o}", (face.compressed,)))
                 for o in c.outfits]
    return jobs


def group_dataset(members: tuple[tuple[Character, str], ...], repeats: int) -> str:
    """`1_krnksf_tyankkps_krnk_tyank` (CONVENTIONS §5)."""
    return "_".join([str(repeats)] + [c.keyword + o for c, o in members] + [c.keyword for c, _ in members])


def group_output(members: tuple[tuple[Character, str], ...]) -> str:
    """`krnksf_tyankkps`: the output name of a group (CONVENTIONS §5)."""
    return "_".join(c.keyword + o for c, o in members)


def group_job(g: Group) -> StageJob:
    out = group_output(g.members)
    reuse = tuple(j.compressed for c, o in g.members if c.training.pivotal.enabled
                  for j in character_jobs(c, "body") if j.name == c.set_name("b", o))
    owner = next((c for c, _ in g.members if c.training.pivotal.enabled), None)
    pivotal = pivotal_options(owner, None, reuse) if owner is not None else None
    return _job("group", "group", g.name, g.path, g.members, group_dataset(g.members, g.repeats), out, g.recipe,
                pivotal=pivotal)


def load_group(path: str | os.PathLike) -> Group:
    """Read a group file; members are looked up as `Characters/<keyword>.toml` beside it."""
    path = Path(path).absolute()
    data, src = read_toml_file(path, "group file")
    g = parse(GroupFile, data, src)
    if len(g.member) < 2:
        raise CharframeError(f"{path}: a group needs two or more [[member]] tables (character = \"krnk\", outfit = \"sf\")")
    folder = path.parent
    known = sorted(p.name[:-5] for p in folder.glob("*.toml") if not p.name.endswith(GROUP_SUFFIX))
    members = []
    for i, m in enumerate(g.member, 1):
        if not is_keyword(m.character):
            raise CharframeError(f"{path}: member {i}: character = {m.character!r} is not a keyword; name a character "
                                 f"file of {folder} by its keyword (letters and digits; known: {', '.join(known) or 'none'})")
        file = folder / f"{m.character}.toml"
        if not file.is_file():
            raise CharframeError(f"{path}: member {i} names character {m.character!r}, but {file} does not exist "
                                 f"(known: {', '.join(known) or 'none'})")
        c = load_character(file)
        c = c.for_family(character_family(c))
        c.outfit_prompt(m.outfit)  # unknown outfit → message naming the character file
        members.append((c, m.outfit))
    families = {character_family(c).id for c, _ in members}
    if len(families) > 1:
        raise CharframeError(f"{path}: its members' models are of different families ({', '.join(sorted(families))}); "
                             "a group LoRA is trained on one base model: give every member a model of one family")
    name = path.name[: -len(GROUP_SUFFIX)] if path.name.endswith(GROUP_SUFFIX) else path.stem
    recipe = g.training or members[0][0].training.group
    if recipe.save_every is not None and recipe.save_every > recipe.steps:
        raise CharframeError(f"{path}: training.save_every: {recipe.save_every} is more than the {recipe.steps} steps: "
                             "no checkpoint would be saved before the last step; use a smaller number, or leave it out")
    return Group(name, path, tuple(members), g.repeats, recipe)


def find_groups(root: Path) -> list[Path]:
    folder = root / CHARACTERS_DIR
    return sorted(folder.glob(f"*{GROUP_SUFFIX}")) if folder.is_dir() else []


def find_character_files(root: Path) -> list[Path]:
    """`Characters/*.toml` without the group files."""
    folder = root / CHARACTERS_DIR
    return sorted(p for p in folder.glob("*.toml") if p.is_file() and not p.name.endswith(GROUP_SUFFIX)) if folder.is_dir() else []


def resolve_target(name: str | os.PathLike, root: Path | None = None) -> Path:
    """A character or group file from what the user typed: a path, or a keyword/group name in `Characters/`."""
    p = Path(name)
    if p.is_file() or (p.exists() and not p.is_dir()):  # a pipe or device too: reading it names what it is
        return p.absolute()
    if p.is_dir():
        raise CharframeError(f"{p}: a folder; name a character file (Characters/<keyword>.toml) or a group file")
    base = (root or Path.cwd()) / CHARACTERS_DIR
    for candidate in (base / f"{name}.toml", base / f"{name}{GROUP_SUFFIX}"):
        if candidate.exists() and not candidate.is_dir():
            return candidate.absolute()
    known = [f.name for f in find_character_files(base.parent) + find_groups(base.parent)]
    raise CharframeError(f"{name}: no such character or group file (looked in {base}; known: {', '.join(known) or 'none'})")


def target_jobs(path: Path, stage: str = "all") -> list[StageJob]:
    """The stage jobs of a character file or a group file (a group runs its members' stages first)."""
    if stage not in STAGES + ("all",):
        raise CharframeError(f"unknown stage {stage!r}; use face, body, group or all", param="stage")
    if path.name.endswith(GROUP_SUFFIX):
        g = load_group(path)
        jobs: list[StageJob] = []
        if stage in ("face", "body", "all"):
            for c, o in g.members:
                member = character_jobs(c, "all" if stage == "all" else stage)
                jobs += [j for j in member if j.stage == "face" or j.name == c.set_name("b", o)]
        return jobs + ([group_job(g)] if stage in ("group", "all") else [])
    if stage == "group":
        raise CharframeError(f"{path}: the group stage runs from a group file (Characters/<name>{GROUP_SUFFIX})", param="stage")
    return character_jobs(load_character(path), stage)
