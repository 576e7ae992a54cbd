"""The score step: judge every saved checkpoint of a stage and choose the one that merge and compress use.

A stage trained with `save_every = N` leaves `<name>-step00000500.safetensors` … beside its final LoRA (the last
step). With an identity model (`[identity]`, `models.ccip`), each checkpoint renders fixed-seed previews — the
`[preview]` scenes and the character at the `[score] codes` angles (prompted with their training captions), at the
`[score] seeds` (default: the first preview seed) — into `<name>-score/step00000500/`, drawn by the stage's own
model family (`pipeline.render`, as the preview; batched on a GPU), and its *identity* is the mean CCIP difference
of those pictures to the stage's training images (lower = more like the character). The dataset's own images are
scored too (each against the dataset's medoid, or the character file's reference pictures): the report's per-code
table.

**The rule** (`choose`): the checkpoint with the lowest identity; checkpoints within `[score] tie` (0.005) of it
count as equal and the earliest of them wins (less training, less overfitting). With a `[score] tagger` (a WD14
tagger, `models.tagger`) each checkpoint also gets its *prompt adherence* (of the prompts' tags the tagger knows —
the scene's "forest", the code caption's "from side" — the share it finds in the pictures), and steps under the
`[score] adherence` floor (0.5) are left out of the choice first. Without an identity model nothing is
rendered and the last step is chosen. `pinned = N` in the score file (what
`charframe run … --step N` writes) overrides the rule; `pinned = 0` (or `--step 0`) lets it choose again.

What scoring took (per checkpoint, and the training's length) goes to `<name>-score/cost.toml`, apart from the
scores, and the log and report state it as a share of training time. Everything else is written to
`<name>.score.toml` beside the LoRA: per checkpoint its file's digest, its scores and its
preview grid, the chosen step and why. A rerun re-scores only checkpoints whose file (or the scoring settings)
changed: the others' scores are read back from that file. Merge and compress read the chosen file from it
(`chosen_lora`). The report (`pipeline.report`) and TensorBoard (`LoRALog/<out>-score/`) show the scores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from charframe.cleaning.identity import identities, reference_files, scorer_for
from charframe.errors import CharframeError
from charframe.generation.embeddings import prompt_embeddings
from charframe.lora.io import read_network
from charframe.models.tagger import Tagger, adherence, expected_tags
from charframe.pipeline.preview import Row, preview_grid
from charframe.pipeline.render import load_drawer
from charframe.pipeline.report import write_report
from charframe.pipeline.score_file import (
    BUDGET, Cost, ScoreDraw, ScoreFile, StepScore, choose, cost_line, cost_path, cost_share, dataset_pictures,
    draw_params, previews_dir, read_cost, read_score, saved_steps, score_draw, score_path, tagger_model, write_cost,
    write_score,
)
from charframe.pipeline.stages import StageJob
from charframe.project import load_project, project_dirs
from charframe.templates.writer import encode_png
from charframe.util.files import atomic_write_bytes
from charframe.util.manifest import digest_file, digest_params

log = logging.getLogger(__name__)


# --- rendering and scoring ---------------------------------------------------------------------------------

def settings_key(job: StageJob, model_key: str, draw: ScoreDraw) -> str:
    """What a checkpoint's scores depend on besides its file: what draws its pictures (`score_file.draw_params`)
    and the scoring models. (The preview's strength sweep is not in it.)"""
    return digest_params({**draw_params(job, draw), "model": model_key})


class _Renderer:
    """The base model and the prompts' embeddings, loaded once on first use (nothing when every checkpoint is
    known); each checkpoint applied for its pictures and taken off again."""

    def __init__(self, job: StageJob, draw: ScoreDraw) -> None:
        self.job, self.draw, self.drawer, self.folder = job, draw, None, None

    def render(self, lora: Path, bar: Any = None) -> list[Any]:
        job, d = self.job, self.draw
        if self.drawer is None:
            self.folder = prompt_embeddings(job.root, [*d.texts, job.character.negative])  # as the preview does
            self.drawer = load_drawer(job)
        with self.drawer.lora(lora):
            return self.drawer.draw(d.texts, job.character.negative, d.settings, bar, self.folder.with_bundle(lora))


def render_checkpoint(job: StageJob, renderer: _Renderer, step: int, lora: Path,
                      bar: Any = None) -> tuple[list[Path], Path]:
    """Render the checkpoint's pictures into `<name>-score/step00000500/` and their labelled grid beside it."""
    d = renderer.draw
    s = d.settings
    images = renderer.render(lora, bar)
    folder = previews_dir(job) / f"step{step:08d}"
    files = []
    for k, img in enumerate(images):
        path = folder / f"{k:02d}.png"
        atomic_write_bytes(path, encode_png(np.asarray(img)), fsync=False)
        files.append(path)
    for stale in set(folder.glob("*.png")) - set(files):  # drawn earlier with more seeds or codes: not these scores'
        stale.unlink(missing_ok=True)
    columns = [f"{label}\nseed {seed}" for label in d.labels for seed in s.seeds]
    title = [f"{job.out} {job.name}: the checkpoint of step {step}", f"{lora.name}; the pictures its identity is "
             f"scored on (seed{'s' if len(s.seeds) > 1 else ''} {', '.join(map(str, s.seeds))}, {s.steps} steps, "
             f"CFG {s.cfg:g}, {s.size} px)"]
    grid = preview_grid(title, [Row(f"step {step}", lora, list(images))], columns, [], s.size)
    grid_path = previews_dir(job) / f"step{step:08d}.png"
    atomic_write_bytes(grid_path, encode_png(np.asarray(grid.image)), fsync=False)
    return files, grid_path


def training_seconds(lora: Path) -> float | None:
    """The training run's length, from its LoRA's sd-scripts metadata (start and finish times); None if unknown."""
    try:
        md = read_network(lora, lazy=True).metadata
        return float(md["ss_training_finished_at"]) - float(md["ss_training_started_at"])
    except (CharframeError, KeyError, ValueError, TypeError, OSError):
        return None


def checkpoint_identity(scorer: Any, pictures: list[Path], dataset: list[Path]) -> float:
    """Mean CCIP difference of a checkpoint's pictures to the training images (lower = more like them)."""
    if not pictures or not dataset:
        raise CharframeError("nothing to score: no pictures or no training images")
    return float(scorer.differences(scorer.features(pictures), scorer.features(dataset)).mean())


def checkpoint_adherence(tagger: Tagger, pictures: list[Path], texts: list[str], seeds: int) -> float | None:
    """Prompt adherence of a checkpoint's pictures (`texts` × `seeds`, in that order): `models.tagger.adherence`."""
    expected = [expected_tags(t, tagger.vocabulary) for t in texts for _ in range(seeds)]
    return adherence(tagger.tags(pictures), expected)


def score_job(job: StageJob, *, progress: bool = True, scorer: Any = "auto") -> Path:
    """Score the stage's checkpoints (re-scoring only new or changed ones), choose one, write the score file,
    TensorBoard scalars and the report. Returns the score file."""
    path = score_path(job)
    saved = saved_steps(job)
    if not saved:
        raise CharframeError(f"{job.lora}: not trained yet; run the train step first")
    previous = read_score(path)
    pinned = previous.pinned if previous else 0
    known = {(s.file, s.digest, s.settings): s for s in (previous.steps if previous else [])}
    if scorer == "auto":
        scorer = scorer_for(job.root)
    tagging = tagger_model(job.root)
    if tagging is not None and scorer is None:
        log.warning("%s: [score] tagger is set but identity is not scored (no [identity] model), so no checkpoint "
                    "is drawn and the tagger is not used; set [identity] model to score checkpoints",
                    job.root / "charframe.toml")
        tagging = None  # adherence is judged beside identity, on the same pictures
    tagger = Tagger(tagging) if tagging is not None else None
    draw = score_draw(job)
    key = settings_key(job, scorer.model.key + (f"+{tagging.key}" if tagging else ""), draw) if scorer else ""
    table = load_project(job.root).score
    dataset = dataset_pictures(job)
    steps: list[StepScore] = []
    renderer = _Renderer(job, draw)
    todo: list[tuple[int, Path, str]] = []
    cost = read_cost(cost_path(job))
    for step, lora in saved:
        digest = digest_file(lora)
        old = known.get((lora.name, digest, key))
        if old is not None and (scorer is None or Path(job.lora.parent / old.grid).is_file()):
            steps.append(dataclasses.replace(old, step=step))
        else:
            todo.append((step, lora, digest))
    per_checkpoint = draw.pictures if scorer is not None and todo else 0
    with tqdm(total=per_checkpoint * len(todo), desc=f"score {job.out}", unit="img", leave=False,
              disable=not progress or not per_checkpoint) as bar:
        for step, lora, digest in todo:
            entry = StepScore(step, lora.name, digest, settings=key)
            if scorer is not None:
                t = time.perf_counter()
                pictures, grid = render_checkpoint(job, renderer, step, lora, bar)
                entry.identity = checkpoint_identity(scorer, pictures, list(dataset.values()))
                if tagger is not None:
                    entry.adherence = checkpoint_adherence(tagger, pictures, draw.texts, len(draw.settings.seeds))
                entry.grid = grid.relative_to(job.lora.parent).as_posix()
                cost.seconds[step] = time.perf_counter() - t
            steps.append(entry)
    steps.sort(key=lambda x: x.step)
    rescored = len(todo) if scorer is not None else 0
    chosen, reason = choose(steps, pinned=pinned, tie=table.tie, adherence_floor=table.adherence if tagger else 0.0)
    per_code: dict[str, float] = {}
    if scorer is not None and dataset:
        refs = [p for c, _ in job.members for p in reference_files(c)]
        values, _ = identities(scorer, list(dataset.values()), refs)
        per_code = {k: round(float(v), 6) for k, v in zip(dataset, values)}
    result = ScoreFile(chosen, next(s.file for s in steps if s.step == chosen), reason, pinned,
                       scorer.threshold if scorer is not None else None, steps, per_code)
    write_score(path, result)
    if scorer is not None:
        cost = Cost({k: v for k, v in cost.seconds.items() if k in {x.step for x in steps}}, training_seconds(job.lora))
        write_cost(cost_path(job), cost)
        done = [x.step for x in steps]
        if line := cost_line(cost, done):
            over = (cost_share(cost, done) or (0.0, 0.0, 0.0))[2] > BUDGET
            (log.warning if over else log.info)("%s %s: %s", job.out, job.name, line)
    if rescored:
        log.info("%s: %d checkpoint(s) scored, %d known", job.out, rescored, len(steps) - rescored)
    log.info("%s %s: step %d chosen (%s)", job.out, job.name, chosen, reason)
    if scorer is not None:
        _tensorboard(job, result)
    write_report(job)
    return path


def _tensorboard(job: StageJob, s: ScoreFile) -> None:
    from torch.utils.tensorboard import SummaryWriter

    folder = project_dirs(job.root).log / f"{job.out}-score"
    with contextlib.suppress(OSError), SummaryWriter(str(folder)) as w:
        for x in s.steps:
            if x.identity is not None:
                w.add_scalar(f"{job.name}/identity", x.identity, x.step)
            if x.adherence is not None:
                w.add_scalar(f"{job.name}/adherence", x.adherence, x.step)
        w.add_scalar(f"{job.name}/chosen_step", s.chosen, job.plan.recipe.steps)
        w.add_text(f"{job.name}/chosen", json.dumps({"step": s.chosen, "reason": s.reason}), job.plan.recipe.steps)
