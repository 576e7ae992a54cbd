"""The training loop and what happens around each step (callbacks), kept apart so the loop reads in one screen.

The loop only computes: loss, backward, gradient sync and clipping, optimizer and schedule step. Logging
(TensorBoard), the progress bar, sample images, periodic states and the caller's hook are callbacks run
after every optimizer step. `StopFlag` turns Ctrl-C or SIGTERM (a scheduler, `docker stop`) into "finish
this step, save, stop"; a second signal stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from charframe.errors import CharframeError
from charframe.training.samples import sample_images
from charframe.training.distributed import any_process, sync_gradients
from charframe.training.loss import denoise_loss, step_generator
from charframe.training.optim import current_lrs
from charframe.training.plan import Sampling

log = logging.getLogger(__name__)


class BadImageError(CharframeError):
    """An image that could not be read during training (its message names the file)."""


@dataclass
class Progress:
    """Where the run is: updated by the loop, read by whoever handles an interruption."""

    step: int
    losses: list[float]
    updating: bool = False  # inside an optimizer step: the weights are not consistent
    samples: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class StepInfo:
    step: int
    loss: float
    average: float  # over the last epoch's steps
    lrs: list[float]  # the rates this step used (text encoder first when it has its own)


class Callback(Protocol):
    def on_step(self, info: StepInfo) -> None: ...

    def close(self) -> None: ...


class StopFlag:
    """First Ctrl-C or SIGTERM: finish the current step, save, stop. Second: stop at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None  # the signal number received

    def handle(self, signum: int, frame: Any = None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        log.warning("stopping after this step (%s again to stop at once)",
                    "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def train_steps(s: Any, progress: Progress, callbacks: Sequence[Callback], stop: StopFlag) -> None:
    """Run the session `s` (a `training.setup.Session`) to its last step; callbacks after each step."""
    recipe, max_norm = s.plan.recipe, s.plan.optimizer.max_grad_norm
    pivotal = s.pivotal
    for batch in s.loader:
        if batch.error:
            raise BadImageError(batch.error)
        gen = step_generator(recipe.seed, progress.step, s.rank)
        loss = denoise_loss(s.comps, batch.pixels, batch.captions, batch.loss_weights, gen, recipe=recipe,
                            device=s.device, weight_dtype=s.weight_dtype, autocast=s.accelerator.autocast,
                            masks=batch.masks, sizes=batch.sizes, text_cache=s.text_cache,
                            latent_cache=s.latent_cache, embeddings=pivotal.lookup if pivotal else None)
        s.accelerator.backward(loss)
        progress.updating = True
        if pivotal:
            pivotal.before_update(progress.step + 1)  # past its stop step the trigger keeps no gradient
        params = [p for p in s.params if p.requires_grad]
        sync_gradients(params, s.world)
        if max_norm:
            s.accelerator.clip_grad_norm_(params, max_norm)
        s.optimizer.step()
        lrs = current_lrs(s.optimizer, s.scheduler)  # the rates this step used
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        progress.updating = False
        progress.step += 1
        value = float(s.accelerator.reduce(loss.detach(), "mean").item()) if s.world > 1 else float(loss.item())
        progress.losses.append(value)
        recent = progress.losses[-s.data.steps_per_epoch :]
        info = StepInfo(progress.step, value, sum(recent) / len(recent), lrs)
        for callback in callbacks:
            callback.on_step(info)
        if any_process(stop.requested is not None, s.world, s.device) and progress.step < recipe.steps:
            raise KeyboardInterrupt


# --- callbacks ------------------------------------------------------------------------------------


class ProgressBar:
    """tqdm bar with the current and the epoch-average loss; only on a terminal (a log file gets no bar lines)."""

    def __init__(self, total: int, initial: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=None)

    def on_step(self, info: StepInfo) -> None:
        self.bar.set_postfix(loss=f"{info.loss:.4f}", avg=f"{info.average:.4f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class TensorBoardLog:
    """`loss/current`, `loss/average`, `lr/unet` (and `lr/textencoder`) per step, as sd-scripts logs them."""

    def __init__(self, log_dir: str, lr_names: tuple[str, ...]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer, self.lr_names = SummaryWriter(log_dir=log_dir), lr_names

    def on_step(self, info: StepInfo) -> None:
        self.writer.add_scalar("loss/current", info.loss, info.step)
        self.writer.add_scalar("loss/average", info.average, info.step)
        for name, lr in zip(self.lr_names, info.lrs):
            self.writer.add_scalar(f"lr/{name}", lr, info.step)

    def close(self) -> None:
        self.writer.close()


class SampleImages:
    """Sample images every `sampling.every` steps: `<out folder>/sample/<stem>_<step>_<i>_<seed>.png`."""

    def __init__(self, comps: Any, sampling: Sampling, out_file: Path, autocast: Callable[[], Any],
                 found: list[Path], clip_skip: int = 1, embeddings: Any = None) -> None:
        self.comps, self.sampling, self.out_file, self.autocast, self.found = comps, sampling, out_file, autocast, found
        self.clip_skip, self.embeddings = clip_skip, embeddings

    def on_step(self, info: StepInfo) -> None:
        if info.step % self.sampling.every == 0:
            self.found += sample_images(self.comps, self.sampling.prompts, self.sampling.seeds,
                                        steps=self.sampling.steps, size=self.sampling.size,
                                        folder=self.out_file.parent / "sample",
                                        stem=f"{self.out_file.stem}_{info.step:06d}", clip_skip=self.clip_skip,
                                        autocast=self.autocast, embeddings=self.embeddings)

    def close(self) -> None:
        pass


class PeriodicState:
    """`snapshot(step)` every `every` steps, not at the last step (the LoRA itself is written then): a resumable
    state, or a step checkpoint with its state."""

    def __init__(self, every: int, last: int, snapshot: Callable[[int], Any]) -> None:
        self.every, self.last, self.snapshot = every, last, snapshot

    def on_step(self, info: StepInfo) -> None:
        if info.step % self.every == 0 and info.step < self.last:
            self.snapshot(info.step)

    def close(self) -> None:
        pass


class StepHook:
    """The caller's `on_step(step, loss)` (tests use it to interrupt; benchmarks to time steps)."""

    def __init__(self, fn: Callable[[int, float], None]) -> None:
        self.fn = fn

    def on_step(self, info: StepInfo) -> None:
        self.fn(info.step, info.loss)

    def close(self) -> None:
        pass
