"""The built-in engine: a plan and a dataset TOML in, a kohya-format LoRA out.

`train` checks every output location and decodes every image before any model is loaded, builds the
session (`training.setup`), runs the loop with its callbacks (`training.loop`) and writes the LoRA
(`training.outputs`). accelerate supplies the device, fp16/bf16 autocast and loss scaling, and the process
group under `accelerate launch`, where each process trains on its share of the batches and only the main
process logs and writes. Every random number is drawn from generators seeded by (seed, step, rank), so a
run resumed from its saved state produces the same losses as one never interrupted.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any, Callable

import torch

from charframe.errors import CharframeError
from charframe.training import state as st
from charframe.training.state import START_OVER
from charframe.training.adapters import network_state_dict, remove_network
from charframe.training.data import load_dataset
from charframe.training.imagecheck import check_images
from charframe.training.loop import (
    BadImageError, Callback, PeriodicState, Progress, ProgressBar, SampleImages, StepHook, StopFlag, TensorBoardLog,
    train_steps,
)
from charframe.training.metadata import step_metadata
from charframe.lora.io import save_lora_file
from charframe.training.checkpoints import checkpoint_path
from charframe.training.outputs import check_output_locations, inputs_digest, plan_path_for, record_output, save_final
from charframe.training.pivotal import check_pivotal
from charframe.training.plan import TrainPlan
from charframe.training.result import TrainingInterrupted, TrainResult
from charframe.training.setup import Session, begin_run, build_session
from charframe.util import toml as tomlio

log = logging.getLogger(__name__)

_SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def train(
    plan: TrainPlan,
    *,
    components: Any = None,
    resume: bool = False,
    checkpointing: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
    check_image_files: bool = True,
) -> TrainResult:
    """Train `plan`; returns the written LoRA and the per-step losses.

    `components`: an `SDComponents` to train on (default: load the plan's model and VAE).
    `checkpointing`: override gradient checkpointing (default: the plan's, on CUDA only).
    `on_step(step, loss)` is called after every optimizer step (tests use it to interrupt).
    `check_image_files`: decode every image before step 1 (off only for benchmarks measuring it).
    Raises `TrainingInterrupted` after Ctrl-C or SIGTERM, with the state saved for `resume=True`.
    """
    start = begin_run(plan, resume)
    check_output_locations(plan.io, start.out_file, samples=plan.sampling.enabled)
    group = load_dataset(plan.io.dataset)
    check_pivotal(plan.pivotal, group, plan.io.dataset)
    digest = inputs_digest(plan, group)
    if start.run.inputs and start.run.inputs != digest:
        raise CharframeError(f"{start.state_dir}: {{param}}: the dataset, captions or model changed since this state "
                             f"was saved at step {start.run.step}; {START_OVER}", param="resume")
    start.run.inputs = digest
    if check_image_files:
        check_images(group)
    s = build_session(plan, group, start, components=components, checkpointing=checkpointing)
    progress = Progress(start.run.step, list(start.run.losses))
    callbacks = _callbacks(s, progress, on_step)
    stop = StopFlag()
    try:
        with stop.installed():
            train_steps(s, progress, callbacks, stop)
    except BaseException as exc:
        remove_network(s.net)
        _close(callbacks)
        err = _explain(exc, progress, s, _keep_progress(s, progress), stop.requested)
        if err is exc:
            raise
        raise err from None
    _close(callbacks)
    remove_network(s.net)
    result = TrainResult(None, progress.losses, progress.step, Path(start.run.log_dir) if s.main else None,
                         samples=progress.samples)
    if s.main:
        result.output = _save(s, progress)
    s.accelerator.wait_for_everyone()
    return result


def _callbacks(s: Session, progress: Progress, on_step: Callable[[int, float], None] | None) -> list[Callback]:
    """What runs after each step: on the main process the bar, TensorBoard, samples and periodic states."""
    plan, callbacks = s.plan, []
    if s.main:
        callbacks += [ProgressBar(plan.recipe.steps, progress.step, plan.output_name),
                      TensorBoardLog(s.start.run.log_dir, s.lr_names)]
        if plan.sampling.enabled:
            callbacks.append(SampleImages(s.comps, plan.sampling, s.start.out_file, s.accelerator.autocast, progress.samples,
                                          plan.recipe.clip_skip, s.pivotal.lookup if s.pivotal else None))
        ckpt = plan.state.checkpoint_every
        if plan.state.save_every:  # a checkpoint's step saves its state with it: not twice
            callbacks.append(PeriodicState(plan.state.save_every, plan.recipe.steps, lambda step: None if ckpt and
                                           step % ckpt == 0 else s.snapshot(step, progress.losses)))
        if ckpt:
            callbacks.append(PeriodicState(ckpt, plan.recipe.steps, lambda step: _save_checkpoint(s, step, progress)))
    if on_step is not None:
        callbacks.append(StepHook(on_step))
    return callbacks


def _save_checkpoint(s: Session, step: int, progress: Progress) -> Path:
    """`<name>-step00000500.safetensors` (sd-scripts' name), then the resumable state of the same step: a run
    stopped later continues from there, and its checkpoints are already written."""
    path = checkpoint_path(s.start.out_file, step)
    tensors = network_state_dict(s.net, _SAVE_DTYPES.get(s.plan.io.save_precision, torch.float32))
    save_lora_file(path, tensors, step_metadata(s.base_metadata, step, s.epochs))
    s.snapshot(step, progress.losses)
    log.info("checkpoint %s", path.name)
    return path


def _close(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        callback.close()


def _keep_progress(s: Session, progress: Progress) -> bool:
    """After an interruption or error: save the finished steps (unless the weights are mid-update)."""
    if s.main and progress.step > s.start.run.step and not progress.updating:
        s.snapshot(progress.step, progress.losses)
        log.warning("state saved at step %d/%d in %s; continue with the same command and resume",
                    progress.step, s.plan.recipe.steps, s.start.state_dir)
        return True
    if s.main and progress.updating:
        log.error("stopped inside an optimizer step at %d: no new state saved", progress.step)
    return False


def _explain(exc: BaseException, progress: Progress, s: Session, saved: bool, signum: int | None) -> BaseException:
    """The exception the caller sees: Ctrl-C/SIGTERM and a bad image become one message that says what to do."""
    where = f"the state is in {s.start.state_dir}: run the same command with {{param}} to continue"
    if isinstance(exc, KeyboardInterrupt):
        err = TrainingInterrupted(f"interrupted at step {progress.step}/{s.plan.recipe.steps}; {where}", param="resume")
        if signum == signal.SIGTERM:
            err.exit_code = 128 + signal.SIGTERM
        return err
    if isinstance(exc, BadImageError):
        kept = f"; {progress.step} finished steps are saved in {s.start.state_dir}: after fixing it, " \
               "run the same command with {param}" if saved else ""
        return CharframeError(f"{exc}{kept}", param="resume" if saved else None)
    return exc


def _save(s: Session, progress: Progress) -> Path:
    """Write the LoRA and its plan, then remove the state (kept, with a fallback copy, if the write fails)."""
    out_file = s.start.out_file
    tensors = network_state_dict(s.net, _SAVE_DTYPES.get(s.plan.io.save_precision, torch.float32))
    metadata = step_metadata(s.base_metadata, progress.step, s.epochs)
    if s.pivotal is not None:  # the embeddings ride in the LoRA as WebUI's Lora extension reads them
        tensors |= s.pivotal.bundle()
    save_final(out_file, tensors, metadata, session_id=s.start.run.session_id,
               keep_state=lambda: s.snapshot(progress.step, progress.losses))
    if s.pivotal is not None:
        for path in s.pivotal.write_standalone(out_file, {"ss_output_name": out_file.stem, "ss_steps": str(progress.step)}):
            log.info("wrote %s", path)
    s.plan.save(plan_path_for(out_file))
    record_output(s.plan, out_file, s.data.group)  # the dataset as loaded at start-up: no second read
    st.remove_state(s.start.state_dir)
    log.info("wrote %s", out_file)
    return out_file


class BuiltinEngine:
    """charframe's own trainer behind the `Engine` protocol."""

    name = "builtin"
    can_resume = True

    def run(self, plan: TrainPlan, *, resume: bool = False, **kw: Any) -> TrainResult:
        return train(plan, resume=resume, **kw)

    def describe(self, plan: TrainPlan) -> str:
        """What a dry run prints: the plan as TOML, after the dataset TOML was read and checked."""
        load_dataset(plan.io.dataset)
        return tomlio.dumps({"plan": plan.to_dict()})
