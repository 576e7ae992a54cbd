"""The step table: each pipeline step → the library call it makes, the files it reads and writes, its settings.

This is the ONE place that knows how a step calls its library function. Calls are named by dotted path
(`"charframe.dataset.prepare:prepare_dirs"`) and imported only when the step runs, for two reasons:
deciding what is stale (`charframe rerun --all`, `--dry-run`) must not import torch or diffusers (seconds of
start-up for fifty characters that need nothing), and the generation/cleaning steps are plug-ins that a
checkout may not have yet — a missing one is a clear message when (and only when) it has to run.

Inputs and outputs are `FileSet`s; the runner records, per step, the content of both and the step's
parameters (`util.manifest`, one record file per character) and runs a step only when that record no longer
matches: a parameter, an input's content, or a recorded output changed. `params` are exactly what the step's
result depends on besides its input files (the export sizes are not a parameter of generate). Steps whose
outputs a user may edit or delete (dataset images) say `protect_outputs`: such a change is the user's, it
retrains, but it does not make the step redo its work. Steps in order: generate → clean → pick → export →
prepare → train → score → merge → compress → preview (`clean` comes before `pick`: picking scores the cleaned
silhouettes; `score` chooses the checkpoint that merge reads, `pipeline.score`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from charframe.character import Character
from charframe.cleaning.identity import identity_setting, reference_files
from charframe.cleaning.rembg_method import model_available
from charframe.dataset.captions import load_rules
from charframe.dataset.naming import IMAGE_EXTENSIONS
from charframe.errors import CharframeError
from charframe.families.family import DEFAULT
from charframe.pipeline.filesets import FileSet
from charframe.pipeline.preview_spec import preview_settings
from charframe.pipeline.score_file import (
    chosen_lora, draw_params, previews_dir, report_path, score_path, tagger_model,
)
from charframe.pipeline.stages import StageJob
from charframe.project import load_project, project_dirs
from charframe.training.checkpoints import checkpoints
from charframe.util.files import check_confined
from charframe.util.schema import dump

log = logging.getLogger(__name__)

IMAGES = tuple(f"**/*{ext}" for ext in IMAGE_EXTENSIONS)
CAPTION_FILES = ("**/*.txt",)
CAPTIONS = CAPTION_FILES + ("*.toml",)


@dataclass(frozen=True)
class RunContext:
    """What a step's adapter gets besides its job: progress bars on or off, and `keep_version(job)`, called before
    a step replaces a finished LoRA, merge or compression (the runner archives the stage's set once per run)."""

    progress: bool = True
    keep_version: Callable[[StageJob], None] = lambda job: None


@dataclass(frozen=True)
class Step:
    """One row of the table."""

    name: str
    call: str                                             # "module:function", imported when the step runs
    stages: frozenset[str]
    inputs: Callable[[StageJob], list[FileSet]]
    outputs: Callable[[StageJob], list[FileSet]]
    params: Callable[[StageJob], dict[str, Any]]
    run: Callable[[Callable[..., Any], StageJob, RunContext], None]
    help: str = ""
    protect_outputs: bool = False   # outputs are the user's to edit or delete (see the module doc)
    refreshes: tuple[str, ...] = ()  # earlier steps whose outputs this one may add to (pick's retries): re-recorded


def resolve(call: str, step: str = "") -> Callable[..., Any]:
    """The function named `module:function`; a module or name this checkout lacks is a clear error."""
    module, _, attr = call.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise CharframeError(f"step {step or call}: {module} is not part of this charframe installation "
                                 f"(update charframe, or run from a later step)") from None
        raise
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise CharframeError(f"step {step or call}: {module} has no function {attr!r} (update charframe)")
    return fn


# --- the file sets of a job ---------------------------------------------------------------------------

def _file(value: str | None) -> list[FileSet]:
    if not value:
        return []
    p = Path(value)
    return [FileSet(p, ("**/*",))] if p.is_dir() else [FileSet(p)]


def _model_files(job: StageJob) -> list[FileSet]:
    return _file(job.plan.io.model) + _file(job.plan.io.vae)


def _own_sets(job: StageJob) -> list[tuple[Character, str, str, str]]:
    """(character, kind, outfit, set name) of the image sets this stage generates itself (none for a group)."""
    if job.stage == "face":
        return [(job.character, "f", "", "face")]
    if job.stage == "body":
        c, o = job.members[0]
        return [(c, "b", o, c.set_name("b", o))]
    return []


def _templates(job: StageJob) -> list[FileSet]:
    dirs = project_dirs(job.root)
    folder = dirs.face_templates if job.stage == "face" else dirs.body_templates
    return [FileSet(folder, ("*.png", "control/**/*.png"))]


def _controlnets(job: StageJob) -> list[FileSet]:
    c = job.character
    return [fs for unit in c.generation.controlnet for fs in _file(str(c.resolve(unit.model) or ""))]


def _work(c: Character, set_name: str, *parts: str) -> FileSet:
    folder = c.work_dir(set_name)
    return FileSet(folder / parts[0], ("*.png",)) if parts[0] != "picks.toml" else FileSet(folder / parts[0])


# --- adapters: the one place each library call is made --------------------------------------------------

def _generate(fn, job: StageJob, ctx: RunContext) -> None:
    for c, kind, outfit, _ in _own_sets(job):
        fn(c, kind, outfit=outfit, face_lora=job.face_lora if kind == "b" else None, progress=ctx.progress)


def _clean(fn, job: StageJob, ctx: RunContext) -> None:
    for c, _, _, set_name in _own_sets(job):
        fn(c, set_name, progress=ctx.progress)


def _pick(fn, job: StageJob, ctx: RunContext) -> None:
    for c, _, _, set_name in _own_sets(job):
        fn(c, set_name, face_lora=job.face_lora, progress=ctx.progress)


def _export(fn, job: StageJob, ctx: RunContext) -> None:
    for c, set_name in job.sets():
        fn(c, set_name, sizes=c.export.sizes, alpha_mask=c.export.alpha_mask, dataset=job.dataset.name)


def _prepare(fn, job: StageJob, ctx: RunContext) -> None:
    if not job.dataset.is_dir():
        raise CharframeError(f"{job.dataset}: the dataset folder does not exist; run the export step first")
    fn([job.dataset], progress=ctx.progress, **({"family": job.family} if job.family != DEFAULT else {}))


def _train(fn, job: StageJob, ctx: RunContext) -> None:
    """A leftover resumable state (Ctrl-C, crash) is continued only when it was saved from the same dataset,
    captions and recipe; otherwise it is set aside and the run starts over. The finished set of this stage (LoRA,
    merge, compression, preview) is kept in its history before the new LoRA replaces it."""
    find_state = resolve("charframe.training.outputs:find_state", "train")
    state_mismatch = resolve("charframe.training.outputs:state_mismatch", "train")
    state = find_state(job.plan.io, job.plan.output_name)
    if state is not None:
        why = state_mismatch(job.plan, state)
        if why:
            log.warning("%s: not resumed, %s; starting over (the state is kept in %s)", state.name, why,
                        project_dirs(job.root).recycler().recycle(state))
            state = None
    if state is None:
        ctx.keep_version(job)  # the finished set, whatever recipe named it, goes to the history first
        job.lora.unlink(missing_ok=True)
        recycler = None
        for _, old in checkpoints(job.lora):  # an earlier run's step checkpoints go to LoRAWork/replaced/
            recycler = recycler or project_dirs(job.root).recycler()
            recycler.recycle(old)
    check_confined(job.lora.parent)  # made inside the project only (util.files.confine_writes)
    job.lora.parent.mkdir(parents=True, exist_ok=True)
    result = fn(job.plan, resume=state is not None)
    if result.output is not None and Path(result.output) != job.lora:
        raise CharframeError(f"{job.lora}: the trainer wrote {result.output} instead; move it away and rerun")


def _score(fn, job: StageJob, ctx: RunContext) -> None:
    fn(job, progress=ctx.progress)


def _merge(fn, job: StageJob, ctx: RunContext) -> None:
    label, weights = job.merge
    if job.merged.exists():
        ctx.keep_version(job)
    fn(chosen_lora(job), weights, label, output=job.merged, overwrite=True)


def _compress(fn, job: StageJob, ctx: RunContext) -> None:
    rule = resolve("charframe.lora.functional:RankRule", "compress")("sv_ratio", float(job.recipe.sv_ratio))
    if job.compressed.exists():
        ctx.keep_version(job)
    fn(job.merged, rule, output=job.compressed, overwrite=True)


def _preview(fn, job: StageJob, ctx: RunContext) -> None:
    """The grid, with the newest kept earlier version of the LoRA as a row when there is one."""
    fn(job, progress=ctx.progress, previous=resolve("charframe.pipeline.history:previous_lora", "preview")(job))


def _generation_params(job: StageJob) -> dict[str, Any]:
    """What the candidates of a set depend on besides files: who the character is in the prompt, the outfit, the
    generation settings (not the export or training settings; generate_set records each candidate's own)."""
    return {c.keyword: {"prompt": c.prompt, "negative": c.negative, "fill": c.fill, "asymmetric": c.asymmetric,
                        "generation": _generation_dump(c), "outfit": c.outfits[o] if o else ""}
            for c, o in job.members}


def _generation_dump(c: Character) -> dict[str, Any]:
    """The generation settings that make the candidates (`retries` only matters to pick)."""
    return {k: v for k, v in dump(c.generation).items() if k != "retries"}


def _pick_inputs(job: StageJob) -> list[FileSet]:
    """The cleaned candidates and templates, the identity model's files and the reference pictures."""
    extra = [FileSet(p) for p in identity_setting(job.root).files()]
    extra += [FileSet(p) for c, _, _, _ in _own_sets(job) for p in reference_files(c)]
    return _sets_work(job, "clean", "alpha") + _templates(job) + extra


def _pick_params(job: StageJob) -> dict[str, Any]:
    """Which identity model and threshold (or none), and per character its references and retries."""
    return {**identity_setting(job.root).params(),
            **{c.keyword: {"reference": list(c.reference), "retries": c.generation.retries,
                           "candidates": c.generation.candidates} for c, _, _, _ in _own_sets(job)}}


def _clean_params(job: StageJob) -> dict[str, Any]:
    """The fill colour and which method `auto` resolves to here (a rembg model installed later cleans again)."""
    return {c.keyword: {"fill": c.fill, "method": "rembg" if model_available(None) else "flood"}
            for c, _ in job.members}


def _rules(job: StageJob) -> dict[str, Any]:
    """The caption rules, and where the project is: the dataset TOML holds absolute `image_dir` paths (as
    sd-scripts needs them), so a moved or copied project rewrites its TOMLs (digested: `params_text` would
    otherwise write the location itself as `<project>`)."""
    where = hashlib.blake2b(str(job.root).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    family = {"family": job.family} if job.family != DEFAULT else {}  # SDXL's bucketing and batch sizes
    return {"rules": repr(load_rules(job.root).rules), "location": where, **family}


def _train_params(job: StageJob) -> dict[str, Any]:
    """The plan, and the dataset TOML as text with the project's location taken out: a moved project's rewritten
    TOML (new absolute paths, same images) does not retrain."""
    toml = Path(job.plan.io.dataset)
    try:
        text = toml.read_text(encoding="utf-8")
    except OSError:
        text = ""
    for form in {str(job.root), job.root.as_posix()}:
        text = text.replace(form, "<project>")
    return {"plan": job.plan.to_dict(), "dataset": text}


def _checkpoints(job: StageJob) -> list[FileSet]:
    """The final LoRA and its step checkpoints (`<stem>-step00000500.safetensors`)."""
    return [FileSet(job.lora), FileSet(job.lora.parent, (f"{job.lora.stem}-step*.safetensors",))]


def _score_inputs(job: StageJob) -> list[FileSet]:
    """The checkpoints and, when identity is scored, the training images, the identity model, base model and tagger."""
    setting = identity_setting(job.root)
    if setting.model is None:
        return _checkpoints(job)
    tagger = tagger_model(job.root)
    return (_checkpoints(job) + [FileSet(job.dataset, IMAGES)] + [FileSet(p) for p in setting.files()]
            + _model_files(job) + [FileSet(p) for c, _ in job.members for p in reference_files(c)]
            + ([FileSet(tagger.model), FileSet(tagger.labels)] if tagger else []))


def _score_params(job: StageJob) -> dict[str, Any]:
    """Without identity only that (nothing is rendered); with it the model, what draws the pictures and the rule."""
    setting = identity_setting(job.root)
    if setting.model is None:
        return setting.params()
    table = load_project(job.root).score
    tagger = tagger_model(job.root)
    return {**setting.params(), "draw": draw_params(job), "tie": table.tie,
            **({"tagger": tagger.name, "adherence": table.adherence} if tagger else {})}


def _sets_work(j: StageJob, *parts: str) -> list[FileSet]:
    return [_work(c, s, part) for c, _, _, s in _own_sets(j) for part in parts]


STEPS: tuple[Step, ...] = (
    Step("generate", "charframe.generation.generate:generate_set", frozenset({"face", "body"}),
         lambda j: _templates(j) + _model_files(j) + _controlnets(j) + ([FileSet(j.face_lora)] if j.face_lora else []),
         lambda j: _sets_work(j, "raw"),
         _generation_params, _generate, "candidates per template code (ControlNet)"),
    Step("clean", "charframe.cleaning.clean:clean_set", frozenset({"face", "body"}),
         lambda j: _sets_work(j, "raw"),
         lambda j: _sets_work(j, "clean", "alpha"),
         _clean_params, _clean, "background removed and filled; transparent copies"),
    Step("pick", "charframe.cleaning.retry:pick_with_retries", frozenset({"face", "body"}),
         _pick_inputs,
         lambda j: _sets_work(j, "picks.toml"),
         _pick_params, _pick, "best candidate per code (pose and identity; new candidates for a code with none); "
         "hand picks pinned", refreshes=("generate", "clean")),
    Step("export", "charframe.cleaning.export:export_set", frozenset({"face", "body", "group"}),
         lambda j: [fs for c, s in j.sets() for fs in (_work(c, s, "picks.toml"), _work(c, s, "clean"), _work(c, s, "alpha"))],
         lambda j: [FileSet(j.dataset, IMAGES)],
         lambda j: {c.keyword: dump(c.export) for c, _ in j.members},
         _export, "picked images at every size", protect_outputs=True),
    Step("prepare", "charframe.dataset.prepare:prepare_dirs", frozenset({"face", "body", "group"}),
         lambda j: [FileSet(j.dataset, IMAGES)],
         lambda j: [FileSet(j.dataset, CAPTIONS)],
         _rules, _prepare, "captions + dataset TOML"),
    Step("train", "charframe.training.engines:train_with", frozenset({"face", "body", "group"}),
         lambda j: [FileSet(j.dataset, IMAGES + CAPTION_FILES)] + _model_files(j),
         _checkpoints,
         _train_params, _train, "LoRA (built-in trainer)"),
    Step("score", "charframe.pipeline.score:score_job", frozenset({"face", "body", "group"}),
         _score_inputs,
         lambda j: [FileSet(score_path(j)), FileSet(previews_dir(j), ("**/*.png",)), FileSet(report_path(j))],
         _score_params, _score, "checkpoints scored (identity), the best step chosen; the report"),
    Step("merge", "charframe.lora.ops.merge:merge_file", frozenset({"face", "body", "group"}),
         lambda j: [FileSet(score_path(j)), FileSet(chosen_lora(j))], lambda j: [FileSet(j.merged)],
         lambda j: {"label": j.merge[0], "weights": list(j.merge[1])}, _merge, "block-weight merge"),
    Step("compress", "charframe.lora.ops.compress:compress_file", frozenset({"face", "body", "group"}),
         lambda j: [FileSet(j.merged)], lambda j: [FileSet(j.compressed)],
         lambda j: {"sv_ratio": j.recipe.sv_ratio}, _compress, "SVD compression"),
    Step("preview", "charframe.pipeline.preview:preview_job", frozenset({"face", "body", "group"}),
         lambda j: _model_files(j) + [FileSet(chosen_lora(j)), FileSet(j.merged), FileSet(j.compressed)],
         lambda j: [FileSet(j.preview)],
         lambda j: {"preview": dataclasses.asdict(preview_settings(j.root, j.plan.io.model is None, j.family)),
                    "prompt": {c.keyword: [c.prompt, c.negative] for c, _ in j.members}},
         _preview, "labelled grid: base vs LoRA vs merged vs compressed"),
)

STEP_NAMES = tuple(s.name for s in STEPS)


def with_calls(table: tuple[Step, ...], calls: Mapping[str, str]) -> tuple[Step, ...]:
    """The table with some steps calling other functions (same contract), e.g. a checkout's own generator."""
    unknown = sorted(set(calls) - {s.name for s in table})
    if unknown:
        raise CharframeError(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(s.name for s in table)}")
    return tuple(dataclasses.replace(s, call=calls.get(s.name, s.call)) for s in table)
