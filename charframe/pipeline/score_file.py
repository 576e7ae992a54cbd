"""The score file of a stage (`<LoRA stem>.score.toml`) and the rule that chooses its checkpoint.

Read and written without loading any model (deciding what is stale reads it: merge takes the chosen file); so is
what a checkpoint is drawn with (`draw_params`: the score step's parameters in the pipeline's step records). The
scoring itself is `pipeline.score`, whose module doc says what the scores mean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from charframe.dataset.captions import caption_for, load_rules
from charframe.dataset.naming import IMAGE_EXTENSIONS, ImageCode, parse_code
from charframe.errors import CharframeError
from charframe.models.tagger import TaggerModel
from charframe.models.tagger import locate as locate_tagger
from charframe.pipeline.preview_spec import PreviewSettings, preview_settings, prompts
from charframe.pipeline.stages import StageJob
from charframe.project import load_project
from charframe.training.checkpoints import checkpoints
from charframe.util import toml as tomlio
from charframe.util.files import atomic_write_text

REPORT_SUFFIX = "-report.html"
SCORE_SUFFIX = ".score.toml"
PREVIEWS_SUFFIX = "-score"


@dataclass
class StepScore:
    """One checkpoint: its step, file, content digest, scores (None = not scored) and preview grid."""

    step: int
    file: str
    digest: str
    identity: float | None = None
    adherence: float | None = None
    grid: str = ""
    settings: str = ""


@dataclass
class ScoreFile:
    chosen: int
    file: str
    reason: str
    pinned: int = 0
    threshold: float | None = None
    steps: list[StepScore] = dataclasses.field(default_factory=list)
    dataset: dict[str, float] = dataclasses.field(default_factory=dict)


def score_path(job: StageJob) -> Path:
    """`<LoRA stem>.score.toml` beside the LoRA."""
    return job.lora.with_name(job.lora.stem + SCORE_SUFFIX)


def previews_dir(job: StageJob) -> Path:
    return job.lora.with_name(job.lora.stem + PREVIEWS_SUFFIX)


def saved_steps(job: StageJob) -> list[tuple[int, Path]]:
    """Every checkpoint of the stage by step, the final LoRA (step = the recipe's steps) last."""
    found = checkpoints(job.lora)
    return found + ([(job.plan.recipe.steps, job.lora)] if job.lora.is_file() else [])


def read_score(path: Path) -> ScoreFile | None:
    """The score file; None when missing or unreadable (then everything is scored again)."""
    try:
        data = tomlio.loads(path.read_text(encoding="utf-8"))
        steps = [StepScore(**{k: v for k, v in s.items() if k in {f.name for f in dataclasses.fields(StepScore)}})
                 for s in data.get("step", [])]
        return ScoreFile(int(data.get("chosen", 0)), str(data.get("file", "")), str(data.get("reason", "")),
                         int(data.get("pinned", 0)), data.get("threshold"), steps, dict(data.get("dataset", {})))
    except (OSError, UnicodeDecodeError, tomlio.TOMLDecodeError, TypeError, ValueError):
        return None


def report_path(job: StageJob) -> Path:
    """`LoRAOutput/<out>/<out>-<stage>-report.html` (`pipeline.report`)."""
    return job.lora.parent / f"{job.out}-{job.name}{REPORT_SUFFIX}"


def chosen_lora(job: StageJob) -> Path:
    """The checkpoint the score step chose (what merge, compress and the preview's LoRA row use); the final LoRA
    when there is no score file yet or it names no file that is there."""
    found = read_score(score_path(job))
    if found is not None and found.file:
        p = job.lora.with_name(found.file)
        if p.is_file():
            return p
    return job.lora


def pin_step(job: StageJob, step: int) -> Path:
    """`pinned = step` in the stage's score file (0 = let the rule choose); the next score step honours it."""
    if step < 0:
        raise CharframeError(f"{{param}} must be a saved step or 0 (let the score choose), got {step}", param="step")
    path = score_path(job)
    if step:
        have = [s for s, _ in saved_steps(job)]
        if have and step not in have:
            raise CharframeError(f"{job.lora.parent}: no checkpoint of step {step} of {job.lora.stem} (saved: "
                                 f"{', '.join(map(str, have))}); choose one of them with {{param}}", param="step")
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = [line for line in text.splitlines() if not line.startswith("pinned =")]
    atomic_write_text(path, f"pinned = {step}\n" + "\n".join(lines) + ("\n" if lines else ""))
    return path


def choose(steps: Sequence[StepScore], *, pinned: int = 0, tie: float = 0.005, adherence_floor: float = 0.0
           ) -> tuple[int, str]:
    """(step, why) by the rule of the module doc."""
    if not steps:
        raise CharframeError("no checkpoint to choose from")
    if pinned:
        if pinned not in [s.step for s in steps]:
            raise CharframeError(f"pinned = {pinned}: no checkpoint of that step (saved: "
                                 f"{', '.join(str(s.step) for s in steps)}); set pinned to one of them, or 0")
        return pinned, f"step {pinned} pinned by hand (pinned = 0 lets the score choose)"
    scored = [s for s in steps if s.identity is not None]
    if not scored:
        return steps[-1].step, "the last step (identity is not scored: no identity model)"
    passing = [s for s in scored if s.adherence is None or s.adherence >= adherence_floor]
    note = ""
    if len(passing) < len(scored):
        note = f"; {len(scored) - len(passing)} step(s) under the adherence floor {adherence_floor:g} left out"
    if not passing:
        return steps[-1].step, f"the last step (every step is under the adherence floor {adherence_floor:g})"
    low = min(s.identity for s in passing)  # type: ignore[type-var]
    near = [s for s in passing if s.identity <= low + tie]  # type: ignore[operator]
    won = min(near, key=lambda s: s.step)
    why = f"lowest identity difference {won.identity:.4f}"
    if len(near) > 1:
        why = (f"identity {won.identity:.4f}, within {tie:g} of the lowest ({low:.4f}) among {len(near)} steps: the "
               f"earliest")
    return won.step, why + note



BUDGET = 0.10  # the score step's share of training time that the defaults are chosen to stay under


@dataclass
class Cost:
    """What scoring took: seconds per checkpoint step (drawing and scoring it) and the training run's length.
    Kept apart from the score file (`<name>-score/cost.toml`), so that timings never make a score file differ."""

    seconds: dict[int, float] = dataclasses.field(default_factory=dict)
    train_seconds: float | None = None


def cost_path(job: StageJob) -> Path:
    return previews_dir(job) / "cost.toml"


def read_cost(path: Path) -> Cost:
    try:
        data = tomlio.loads(path.read_text(encoding="utf-8"))
        return Cost({int(k): float(v) for k, v in data.get("seconds", {}).items()}, data.get("train_seconds"))
    except (OSError, UnicodeDecodeError, tomlio.TOMLDecodeError, TypeError, ValueError, AttributeError):
        return Cost()


def write_cost(path: Path, cost: Cost) -> None:
    data: dict[str, Any] = {"seconds": {str(k): round(v, 3) for k, v in sorted(cost.seconds.items())}}
    if cost.train_seconds is not None:
        data["train_seconds"] = round(cost.train_seconds, 2)
    atomic_write_text(path, "# charframe: what the score step took per checkpoint, and the training's length\n"
                      + tomlio.dumps(data))


def cost_share(cost: Cost | None, steps: Sequence[int]) -> tuple[float, float, float] | None:
    """(seconds per checkpoint, seconds for all of `steps`, their share of the training's time), from the timed
    checkpoints among `steps`; None when nothing was timed. (A rerun re-scores only new checkpoints; this is what
    scoring all of them costs.)"""
    timed = [cost.seconds[k] for k in steps if k in cost.seconds] if cost else []
    if cost is None or not timed or not cost.train_seconds:
        return None
    per_ckpt = sum(timed) / len(timed)
    return per_ckpt, per_ckpt * len(steps), per_ckpt * len(steps) / cost.train_seconds


def cost_line(cost: Cost | None, steps: Sequence[int], budget: float = BUDGET) -> str:
    """`cost_share` in words ("" when nothing was timed). Over `budget`, it says the checkpoint interval from which
    the share would hold at these costs, and the settings that draw fewer pictures."""
    found = cost_share(cost, steps)
    if found is None or cost is None or not cost.train_seconds:
        return ""
    per_ckpt, total, share = found
    line = (f"scoring {len(steps)} checkpoint(s) takes {total:.1f} s ({per_ckpt:.2f} s each): {100 * share:.1f} % of "
            f"the training's {cost.train_seconds:.1f} s (target ≤ {100 * budget:g} %)")
    if share > budget:
        per_step = cost.train_seconds / max(steps)
        line += (f"; it holds from a checkpoint every ≥ {per_ckpt / (budget * per_step):.0f} steps (save_every), or "
                 "with fewer pictures per checkpoint ([preview] scenes, [score] codes, seeds, steps)")
    return line


def write_score(path: Path, s: ScoreFile) -> None:
    head = ("# charframe score: the checkpoints of this LoRA, scored (identity = mean CCIP difference of each step's\n"
            "# previews to the training images; lower = more like the character), and the step merge and compress use.\n"
            "# Set pinned to a step (or run with --step N) to use that one; pinned = 0 lets the score choose.\n")
    data: dict[str, Any] = {"pinned": s.pinned, "chosen": s.chosen, "file": s.file, "reason": s.reason}
    if s.threshold is not None:
        data["threshold"] = s.threshold
    data["step"] = [{k: v for k, v in dataclasses.asdict(x).items() if v is not None and v != ""} for x in s.steps]
    if s.dataset:
        data["dataset"] = s.dataset
    atomic_write_text(path, head + tomlio.dumps(data))


def dataset_pictures(job: StageJob) -> dict[str, Path]:
    """One training image per (subset kind, code): the largest (the dataset holds each at several sizes)."""
    best: dict[str, tuple[int, Path]] = {}
    for p in sorted(job.dataset.rglob("*")):
        code = parse_code(p.name)
        if p.suffix.lower() not in IMAGE_EXTENSIONS or code is None or not p.is_file() or "_alpha_" in p.parent.name:
            continue
        key = f"{p.parent.name.split('_')[0]}/{code.code}"
        size = p.stat().st_size
        if key not in best or size > best[key][0]:
            best[key] = (size, p)
    return {k: v[1] for k, v in sorted(best.items())}


# --- what a checkpoint is drawn with -------------------------------------------------------------------------

def angle_codes(job: StageJob) -> list[ImageCode]:
    """The stage's `[score] codes` as codes of its set letter (a group stage: the body letter)."""
    letter = "f" if job.stage == "face" else "b"
    out = []
    for digits in load_project(job.root).score.codes:
        code = parse_code(f"{letter}{digits}")
        if code is None or code.rest:
            raise CharframeError(f"{job.root / 'charframe.toml'}: score.codes: {digits!r} is not an elevation and "
                                 "azimuth like 02")
        out.append(code)
    return out


def score_settings(job: StageJob) -> PreviewSettings:
    """The preview's settings for the stage's model, with the `[score]` seeds (default: the first preview seed) and
    sampling steps (0 = the preview's; the tiny demo model keeps its own)."""
    s = preview_settings(job.root, job.plan.io.model is None, job.family)
    table = load_project(job.root).score
    s = replace(s, seeds=table.seeds or s.seeds[:1])
    return replace(s, steps=table.steps) if table.steps and job.plan.io.model is not None else s


@dataclass(frozen=True)
class ScoreDraw:
    """What each checkpoint is drawn with: the settings, the prompts (the preview scenes, then the angle codes with
    their training captions) and their labels. One picture per prompt and seed, in that order."""

    settings: PreviewSettings
    texts: list[str]
    labels: list[str]

    @property
    def pictures(self) -> int:
        return len(self.texts) * len(self.settings.seeds)


def score_draw(job: StageJob) -> ScoreDraw:
    """The stage's `ScoreDraw` (read once per scoring: it reads the project file and the caption rules)."""
    s = score_settings(job)
    texts = prompts(job.members, s)
    labels = list(s.scenes)
    rules = load_rules(job.root)
    c, outfit = job.members[0]
    for code in angle_codes(job):
        texts.append(caption_for(code, c.subset(code.kind, 512, outfit), rules))
        labels.append(code.code)
    return ScoreDraw(s, texts, labels)


def tagger_model(root: Path) -> TaggerModel | None:
    """The `[score] tagger` (None: "none"); a named one that is missing is one error naming the file."""
    choice = load_project(root).score.tagger.strip()
    if not choice or choice.lower() == "none":
        return None
    return locate_tagger(choice, root=root)


def draw_params(job: StageJob, draw: ScoreDraw | None = None) -> dict[str, Any]:
    """Everything that decides a checkpoint's score pictures besides its file: the prompts, seeds, sampling steps,
    size and CFG, the negative prompt, base model, family, prediction, VAE and clip skip."""
    d = draw or score_draw(job)
    s, io = d.settings, job.plan.io
    return {"texts": d.texts, "seeds": list(s.seeds), "steps": s.steps, "size": s.size, "cfg": s.cfg,
            "negative": job.character.negative, "base": io.model, "vae": io.vae, "family": io.family,
            "prediction": io.prediction, "clip_skip": job.plan.recipe.clip_skip}
