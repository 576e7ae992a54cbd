"""`charframe run`, `charframe rerun`, `charframe watch`: the staged character pipeline (charframe.pipeline)."""

from __future__ import annotations

import argparse
from pathlib import Path

STEPS_TEXT = "generate → clean → pick → export → prepare → train → score → merge → compress → preview"

RUN_EPILOG = f"""\
steps: {STEPS_TEXT}
stages: face (LoRAInput/4_krnk) → body per outfit (LoRAInput/2_krnksf_krnk, images made with the face LoRA)
        → group (from a group file Characters/<name>.group.toml: LoRAInput/1_krnksf_tyankkps_krnk_tyank)
Only stale steps run: each step records the content of what it read and wrote and its settings in
LoRAWork/<keyword>/pipeline/steps.json, and runs again when any of that changed (an output deleted or
truncated included). A step after one that ran reruns only if what it reads really changed. Before a LoRA,
merge or compression is replaced, the previous set is kept in LoRAOutput/<out>/history/ (see `charframe history`).
families: SD1.x and SDXL; an SDXL character (its model, or `family = "sdxl"`) gets SDXL's generation settings,
buckets and recipes where its file is silent (data/families/sdxl.toml); a group's members share one family.
examples:
  charframe run krnk                        # Characters/krnk.toml, face then body stages
  charframe run Characters/krnk.toml --stage face --dry-run
  charframe run krnk --from train           # retrain (and score, merge, compress, preview) even if up to date
  charframe run krnk_tyank                  # Characters/krnk_tyank.group.toml: members, then the group
  charframe run krnk --stage face --step 600    # merge the checkpoint of step 600 instead of the score's choice
  charframe run Characters/krnk.toml Characters/tyank.toml   # several files (as dropped on bin/run.sh)
A new project needs its pose templates first: charframe templates (FaceTemplate/, BodyTemplate/).
Progress: one line per step with its time and "step k of N" with the time left; the table at the end lists
what ran (all steps with -v; one line when nothing had to run).
"""

RERUN_EPILOG = """\
Reruns exactly the stale steps of every character file and group file in Characters/ (a step after one that
ran reruns only if what it reads changed), goes on past a character that fails, then prints a summary table;
exit 1 if anything failed.
examples:
  charframe rerun --all --dry-run           # what would run, and why
  charframe rerun --all                     # after editing a caption rule in charframe.toml
  charframe rerun --all D:/charframe        # the project of that folder (what bin/rerun-all does)
  charframe rerun krnk tyank --force        # redo everything of two characters
  charframe rerun --all --executor ray --address auto   # on a Ray cluster (pip install 'charframe[ray]')
  charframe rerun --all --executor slurm    # one Slurm job per character chain ([cluster] in charframe.toml)
"""

HISTORY_EPILOG = """Every time a stage's LoRA, merge or compression is replaced (a retrain after a rule change), the previous set —
LoRA, merged, compressed, preview and what they were made from — is kept in LoRAOutput/<out>/history/<time>/
(the newest 5; `[history] keep = N` in charframe.toml). `restore` puts one back; the set it replaces is kept too.
examples:
  charframe history krnk                    # every stage's kept versions
  charframe restore krnk 20261207-153012 --stage face
"""

WATCH_EPILOG = """\
Watches LoRAInput/ and Characters/ of the project. A dataset folder whose images changed is re-prepared once
(captions + TOML) after the copying has settled; with --train a new or changed character file or dataset also
queues its `charframe run`. Jobs run one at a time; the queue is LoRAWork/watch-queue.json, so a restarted
watcher continues it. Ctrl-C stops after saving the queue.
examples:
  charframe watch                           # the project of the current folder
  charframe watch D:/charframe --train --poll   # network drive: poll instead of OS events
"""


def _options(args: argparse.Namespace):
    from charframe.pipeline.progress import inner_bars
    from charframe.pipeline.runner import Options

    return Options(args.stage, getattr(args, "from_step", None), getattr(args, "until_step", None), args.force,
                   progress=inner_bars(getattr(args, "quiet", False)))


def _progress(args: argparse.Namespace, plans):  # type: ignore[no-untyped-def]
    """The runner's `on_step` printing one line per step and "step k of N" on stdout (plain lines when it is not
    a terminal), told beforehand what the dry plans expect to run; None with -q."""
    from charframe.pipeline.progress import Progress, steps_to_run

    if getattr(args, "quiet", False):
        return None
    progress = Progress()
    progress.expect(steps_to_run(plans))
    return progress.on_step


def _template_warnings(planned) -> None:  # type: ignore[no-untyped-def]
    """Say so before anything runs when a generate step must run and FaceTemplate/ or BodyTemplate/ holds no
    templates (a new project: `charframe templates` makes them)."""
    import logging

    from charframe.project import project_dirs

    seen: set[Path] = set()
    for p in planned:
        if p.step.name != "generate" or not p.reason:
            continue
        dirs = project_dirs(p.job.root)
        folder, kind = (dirs.face_templates, "f") if p.job.stage == "face" else (dirs.body_templates, "b")
        if folder not in seen and not any(folder.glob(f"{kind}[0-2][0-7]*.png")):
            logging.getLogger("charframe").warning(
                "%s has 0 template files, so the %s set cannot be generated: make the templates first with "
                "`charframe templates` (about a minute), then run again", folder, p.job.stage)
        seen.add(folder)


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("run", help="run the staged pipeline of one character or group (only what is stale)",
                       description="Run a character's stages (face, body per outfit) or a group's, step by step.",
                       epilog=RUN_EPILOG, formatter_class=fmt)
    p.add_argument("character", nargs="+", metavar="CHARACTER",
                   help="character file(s), group file(s), or names in Characters/ (several run one after another)")
    p.add_argument("--stage", default="all", choices=("face", "body", "group", "all"), help="stage(s) to run (default all)")
    p.add_argument("--from", dest="from_step", metavar="STEP", help="run from this step on, even if up to date")
    p.add_argument("--until", dest="until_step", metavar="STEP", help="stop after this step")
    p.add_argument("--force", action="store_true", help="redo every step")
    p.add_argument("--dry-run", action="store_true", help="print each step, its inputs and outputs, up to date or not")
    p.add_argument("--step", type=int, metavar="N", help="use the checkpoint of step N (pinned in the stage's score "
                   "file until --step 0) instead of the one the score step chooses; needs one stage (--stage)")
    _executor_args(p)
    p.add_argument("-v", "--verbose", dest="all_rows", action="store_true",
                   help="list every step at the end, up to date or not (default: what ran; one line when nothing did)")
    p.set_defaults(func=run_run)

    rp = sub.add_parser("report", help="write and print the path of each stage's HTML report (scores, previews)",
                        description="Write the report page of each stage of a character or group (the score step "
                        "writes it too) and print where it is.", formatter_class=fmt,
                        epilog="examples:\n  charframe report krnk\n  charframe report krnk --stage face --open\n")
    rp.add_argument("character", metavar="CHARACTER", help="character file, group file, or a name in Characters/")
    rp.add_argument("--stage", default=None, metavar="STAGE", help="one stage: face, body-<outfit> or group")
    rp.add_argument("--open", action="store_true", help="open the page(s) in the web browser")
    rp.set_defaults(func=run_report)

    r = sub.add_parser("rerun", help="rerun what changed, for many characters; summary table at the end",
                       description="Rerun the stale steps of characters and groups.", epilog=RERUN_EPILOG,
                       formatter_class=fmt)
    r.add_argument("characters", nargs="*", metavar="CHARACTER", help="character/group files or names (or --all)")
    r.add_argument("--all", action="store_true", help="every character and group file in Characters/")
    r.add_argument("--project", metavar="DIR", help="project folder (default: found from the current folder)")
    r.add_argument("--stage", default="all", choices=("face", "body", "group", "all"), help="stage(s) (default all)")
    r.add_argument("--force", action="store_true", help="redo every step")
    r.add_argument("--from", dest="from_step", metavar="STEP", help="run from this step on, even if up to date")
    r.add_argument("--until", dest="until_step", metavar="STEP", help="stop after this step")
    r.add_argument("--dry-run", action="store_true", help="print what would run and why; run nothing")
    _executor_args(r)
    r.set_defaults(func=run_rerun)

    h = sub.add_parser("history", help="list the kept earlier versions of a character's LoRAs",
                       description="List the earlier versions kept of each stage's finished LoRA set.",
                       epilog=HISTORY_EPILOG, formatter_class=fmt)
    h.add_argument("character", metavar="CHARACTER", help="character file, group file, or a name in Characters/")
    h.add_argument("--stage", default=None, metavar="STAGE", help="one stage: face, body-<outfit> or group")
    h.set_defaults(func=run_history)

    h = sub.add_parser("restore", help="put an earlier version of a stage's LoRA set back",
                       description="Restore a kept version of a stage's finished LoRA set (the current one is kept).",
                       epilog=HISTORY_EPILOG, formatter_class=fmt)
    h.add_argument("character", metavar="CHARACTER", help="character file, group file, or a name in Characters/")
    h.add_argument("version", metavar="VERSION", help="the version's time stamp, as `charframe history` lists it")
    h.add_argument("--stage", default=None, metavar="STAGE", help="face, body-<outfit> or group (needed when "
                   "several stages have versions)")
    h.set_defaults(func=run_restore)

    w = sub.add_parser("watch", help="watch dataset folders and character files; prepare (and train) on change",
                       description="Watch a project and keep its datasets prepared (and, with --train, trained).",
                       epilog=WATCH_EPILOG, formatter_class=fmt)
    w.add_argument("project", nargs="?", metavar="PROJECT", help="project folder (default: found from the current folder)")
    w.add_argument("--train", action="store_true", help="also queue `run` for changed character files and datasets")
    w.add_argument("--poll", action="store_true", help="poll the folders (network drives) instead of OS events")
    w.add_argument("--debounce", type=float, default=2.0, metavar="S", help="quiet seconds before acting (default 2)")
    w.set_defaults(func=run_watch)

    t = sub.add_parser("tensorboard", help="open TensorBoard on the project's LoRALog/ (losses, preview grids)",
                       description="Start TensorBoard on LoRALog/: training losses and the preview images of every stage.",
                       epilog="example:\n  charframe tensorboard            # then open http://localhost:6006\n",
                       formatter_class=fmt)
    t.add_argument("project", nargs="?", metavar="PROJECT", help="project folder (default: found from the current folder)")
    t.add_argument("--port", type=int, default=6006, help="port (default 6006)")
    t.set_defaults(func=run_tensorboard)


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray", "slurm"), default=None,
                   help="where the jobs run: local (this process, the default), ray (a Ray cluster), slurm (one "
                        "batch job per character chain); default: [cluster] executor in charframe.toml")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="ray: the cluster (auto = the one this machine belongs to, ray://HOST:10001; default: "
                        "[cluster] address, empty = a Ray instance on this machine)")


def _project(arg: str | None) -> Path:
    from charframe.errors import CharframeError
    from charframe.project import find_project_root

    if arg is not None and not Path(arg).is_dir():
        raise CharframeError(f"{arg}: not a folder; name the project folder (the one holding LoRAInput/)", param="project")
    return find_project_root(arg)


def run_run(args: argparse.Namespace) -> int:
    from charframe.errors import CharframeError
    from charframe.pipeline.executors import execute
    from charframe.pipeline.runner import describe_plan, run_target, summary_table
    from charframe.pipeline.stages import resolve_target
    from charframe.project import find_project_root

    root = find_project_root()
    targets = [resolve_target(c, root) for c in args.character]  # every name checked before anything runs
    if args.step is not None:
        if len(targets) != 1:
            raise CharframeError(f"{{param}} names a checkpoint of one stage of one character, and this runs "
                                 f"{len(targets)} files; run them one at a time", param="step")
        _pin_step(targets[0], args)
    plans = [run_target(t, _options(args), dry_run=True)[0] for t in targets]  # decides only: no model loaded
    _template_warnings([p for plan in plans for p in plan])
    if args.dry_run:
        print("\n".join(describe_plan(plan) for plan in plans))
        return 0
    report = execute(targets, _options(args), executor=args.executor, address=args.address, whole_targets=True,
                     on_step=_progress(args, plans))
    print(summary_table(report, all_rows=args.all_rows or args.verbose > 0))
    return 1 if report.failed else 0


def run_rerun(args: argparse.Namespace) -> int:
    from charframe.errors import CharframeError
    from charframe.pipeline.executors import execute
    from charframe.pipeline.runner import all_targets, describe_targets, plan_targets, summary_table
    from charframe.pipeline.stages import resolve_target

    if args.all and len(args.characters) == 1 and Path(args.characters[0]).is_dir() and not args.project:
        args.project, args.characters = args.characters[0], []  # `rerun --all PROJECT` (a folder dropped on bin/rerun-all)
    if args.all and args.characters:  # files dropped on bin/rerun-all
        raise CharframeError(
            f"{' '.join(args.characters)}: --all takes the project folder (the one holding Characters/ and "
            "LoRAInput/), not files: drop that folder on rerun-all, or drop character files on run to run just them")
    root = _project(args.project)
    if args.all == bool(args.characters):
        raise CharframeError("name characters or give --all (not both)", param="all")
    targets = all_targets(root) if args.all else [resolve_target(c, root) for c in args.characters]
    if not targets:
        raise CharframeError(f"{root / 'Characters'}: no character files (<keyword>.toml) to run")
    if args.dry_run:
        print(describe_targets(plan_targets(targets, _options(args))))
        return 0
    quiet = getattr(args, "quiet", False)  # the plan only tells the progress lines what to expect
    plans = [] if quiet else [p for _, p in plan_targets(targets, _options(args)) if not isinstance(p, str)]
    report = execute(targets, _options(args), executor=args.executor, address=args.address,
                     on_step=_progress(args, plans))
    print(summary_table(report))
    return 1 if report.failed else 0


def _stage_jobs(args: argparse.Namespace):
    from charframe.errors import CharframeError
    from charframe.pipeline.stages import resolve_target, target_jobs
    from charframe.project import find_project_root

    target = resolve_target(args.character, find_project_root())
    stage = "group" if target.name.endswith(".group.toml") else "all"
    jobs = target_jobs(target, stage)
    if args.stage is not None:
        names = [j.name for j in jobs]
        jobs = [j for j in jobs if j.name == args.stage]
        if not jobs:
            raise CharframeError(f"{target.name} has no stage {args.stage!r}; its stages: {', '.join(names)}",
                                 param="stage")
    return jobs


def run_history(args: argparse.Namespace) -> int:
    from charframe.pipeline.history import versions

    for job in _stage_jobs(args):
        kept = versions(job)
        print(f"{job.out} ({job.name}): {len(kept)} kept version(s) in {job.lora.parent / 'history'}")
        for v in kept:
            print(f"  {v.name}  {v.size / 1e6:8.2f} MB  " + ", ".join(f.name for f in v.files))
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from charframe.errors import CharframeError
    from charframe.pipeline.history import restore, versions
    from charframe.pipeline.lock import run_lock
    from charframe.pipeline.runner import Records

    jobs = [j for j in _stage_jobs(args) if any(v.name == args.version for v in versions(j))]
    if len(jobs) != 1:
        what = "no stage has" if not jobs else f"several stages ({', '.join(j.name for j in jobs)}) have"
        raise CharframeError(f"{args.character}: {what} a kept version {args.version}; name the stage with {{param}} "
                             "or pick a version `charframe history` lists", param="stage")
    job = jobs[0]
    with run_lock(job.state_dir, job.owner):
        replaced = restore(job, args.version, Records().of(job))
    print(f"{job.out} ({job.name}): version {args.version} restored; the set it replaced is kept in {replaced}")
    return 0


def _pin_step(target: Path, args: argparse.Namespace) -> None:
    from charframe.errors import CharframeError
    from charframe.pipeline.lock import run_lock
    from charframe.pipeline.runner import Options, target_stage
    from charframe.pipeline.score_file import pin_step
    from charframe.pipeline.stages import target_jobs

    jobs = target_jobs(target, target_stage(target, Options(stage=args.stage)))
    if len(jobs) != 1:
        raise CharframeError(f"{target.name}: {{param}} names a checkpoint of one stage, and this runs "
                             f"{len(jobs)} ({', '.join(j.name for j in jobs)}); add --stage", param="step")
    job = jobs[0]
    with run_lock(job.state_dir, job.owner):
        path = pin_step(job, args.step)
    print(f"{job.out} ({job.name}): " + (f"step {args.step} pinned in {path}" if args.step else
                                           f"the score chooses the step again ({path})"))


def run_report(args: argparse.Namespace) -> int:
    import webbrowser

    from charframe.pipeline.report import write_report

    for job in _stage_jobs(args):
        path = write_report(job)
        print(f"{job.out} ({job.name}): {path}")
        if args.open:
            webbrowser.open(path.as_uri())
    return 0


def run_watch(args: argparse.Namespace) -> int:
    from charframe.pipeline.watch import watch

    return watch(_project(args.project), train=args.train, poll=args.poll, debounce=args.debounce)


def run_tensorboard(args: argparse.Namespace) -> int:
    import subprocess
    import sys

    from charframe.project import project_dirs

    logdir = project_dirs(_project(args.project)).log
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"TensorBoard on {logdir}: http://localhost:{args.port}  (Ctrl-C stops)")
    try:
        return subprocess.call([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(args.port)])
    except KeyboardInterrupt:
        return 0
