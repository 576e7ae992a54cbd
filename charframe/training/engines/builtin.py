"""The built-in trainer: a plan and a dataset TOML in, a kohya-format LoRA out.

The loop is sd-scripts' for SD1.x LoRA: VAE latents × scaling factor, noise (plus optional offset)
added at a uniform random timestep of the base model's DDPM schedule, the UNet predicts the noise
from the CLIP states of the caption, MSE loss (reg images weighted), AdamW8bit/Adafactor, clipped
gradients, one scheduler step per step. accelerate supplies the device, fp16/bf16 autocast and loss
scaling, and the process group under `accelerate launch`, where each process trains on its share of
the batches, gradients are averaged across processes, and only the main process logs and writes.

Every random number is drawn from generators seeded by (seed, step, rank) — never the global RNG —
so a run resumed from its saved state produces the same losses as one never interrupted.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from charframe.deps import place
from charframe.errors import CharframeError
from charframe.util.files import free_output_path
from charframe.training import state as st
from charframe.training.data import DatasetGroup, load_dataset
from charframe.training.images import StepData, unbatched
from charframe.training.metadata import optimizer_description, step_metadata, training_metadata
from charframe.training.adapters import (
    NetworkSpec, create_network, load_network_weights, network_state_dict, param_groups, remove_network,
)
from charframe.training.optim import build_optimizer, build_scheduler, current_lrs
from charframe.training.plan import TrainPlan
from charframe.training.text import encode, token_count, tokenize
from charframe.models.load import load_sd
from charframe.lora.io import save_lora_file
from charframe.lora.io import load_lora_file

log = logging.getLogger(__name__)


class TrainingInterrupted(CharframeError):
    """Ctrl-C: the state is saved; the message says how to continue."""

    exit_code = 130


@dataclass
class TrainResult:
    output: Path | None  # the LoRA file (None when interrupted)
    losses: list[float]
    steps_done: int
    log_dir: Path | None
    state_dir: Path | None = None  # set while a resumable state exists
    samples: list[Path] = field(default_factory=list)


def output_paths(plan: TrainPlan) -> tuple[Path, Path]:
    """(planned LoRA file, its state folder): `<output_dir>/<out>/<out>-<logic>-<dim>-<lr>-<steps>.safetensors`."""
    out = Path(plan.output_dir) / plan.out / f"{plan.output_name}.{plan.save_model_as}"
    return out, st.state_dir_for(out)


def plan_path_for(output: Path) -> Path:
    """The plan saved beside a LoRA: `<stem>.train.toml`."""
    return output.with_name(output.stem + ".train.toml")


def find_state(plan: TrainPlan) -> Path | None:
    """The newest complete state folder of this plan's output name, if any."""
    out, _ = output_paths(plan)
    found = [p for p in out.parent.glob(f"{plan.output_name}*-state") if (p / st.STATE_FILE).is_file()]
    return max(found, key=lambda p: (p / st.STATE_FILE).stat().st_mtime) if found else None


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    value = int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(value & 0x7FFF_FFFF_FFFF_FFFF)


def load_components(plan: TrainPlan) -> Any:

    return load_sd(plan.model, plan.vae)


class _StopFlag:
    """First Ctrl-C: finish the current step, save, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator["_StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            log.warning("stopping after this step (Ctrl-C again to stop at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _warn_long_captions(group: DatasetGroup, tokenizer: Any, plan: TrainPlan) -> None:
    limit = plan.max_token_length or 75
    first = {}  # caption → an image using it (charframe datasets repeat captions a lot)
    for d in group.datasets:
        for e in d.images:
            first.setdefault(e.caption, e.path)
    long = [(path, n) for caption, path in first.items() if (n := token_count(tokenizer, caption)) > limit]
    if long:
        path, n = long[0]
        hint = " or shorten them" if limit >= 225 else "; pass --max-token-length 150 or 225 to keep them"
        log.warning("%d distinct caption(s) exceed %d tokens and are truncated (e.g. %s: %d tokens)%s",
                    len(long), limit, path, n, hint)


def _prepare_models(comps: Any, plan: TrainPlan, device: torch.device, weight_dtype: torch.dtype, checkpointing: bool) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    for m in (comps.unet, comps.text_encoder, comps.vae):
        m.requires_grad_(False)
        place(m, device, weight_dtype)
    if plan.attention == "xformers" and device.type == "cuda":
        comps.unet.enable_xformers_memory_efficient_attention()
    else:
        comps.unet.set_attn_processor(AttnProcessor2_0())
    if checkpointing:
        comps.unet.enable_gradient_checkpointing()
        te = comps.text_encoder  # transformers 5 renamed the method; 4.x only has the old name
        if hasattr(te, "activation_checkpointing_enable"):
            te.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    comps.unet.train(checkpointing)
    comps.text_encoder.train(checkpointing)
    comps.vae.eval()


def _sync_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over processes (the network is not DDP-wrapped: it is hooked into the UNet)."""
    if world <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
        offset += n


def _any_process(flag: bool, world: int, device: torch.device) -> bool:
    if world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def denoise_loss(
    comps: Any,
    pixels: torch.Tensor,
    captions: list[str],
    weights: torch.Tensor,
    gen: torch.Generator,
    *,
    plan: TrainPlan,
    device: torch.device,
    weight_dtype: torch.dtype = torch.float32,
    autocast: Callable[[], Any] = nullcontext,
    timesteps: torch.Tensor | None = None,
) -> torch.Tensor:
    """One batch's loss: the UNet's noise prediction error at random (or given) timesteps, reg-weighted."""
    sched = comps.noise_scheduler
    with torch.no_grad():
        pixels = pixels.to(device, weight_dtype, non_blocking=True)
        latents = comps.vae.encode(pixels).latent_dist.sample(generator=gen).float() * comps.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen).to(device)
    if plan.noise_offset:
        noise += plan.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen).to(device)
    if timesteps is None:
        timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    timesteps = timesteps.to(device)
    noisy = sched.add_noise(latents, noise, timesteps)
    target = sched.get_velocity(latents, noise, timesteps) if sched.config.prediction_type == "v_prediction" else noise
    with autocast():
        states = encode(comps.text_encoder, tokenize(comps.tokenizer, captions, plan.max_token_length), plan.clip_skip)
        pred = comps.unet(noisy.to(weight_dtype), timesteps, states.to(weight_dtype)).sample
    per_item = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_item * weights.to(device)).mean()


def _accelerator(mixed: str, cuda: bool) -> Any:
    """accelerate keeps one process-wide precision; a later run in the same process (a pipeline
    training stage after stage, a test) may need another, so only that part of its state is reset.
    The distributed part (processes under `accelerate launch`) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed:  # noqa: SLF001
        AcceleratorState._reset_state(reset_partial_state=False)  # noqa: SLF001
    return Accelerator(mixed_precision=mixed, cpu=not cuda)  # cpu: several processes on CPU use gloo


def train(
    plan: TrainPlan,
    *,
    components: Any = None,
    resume: bool = False,
    checkpointing: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `plan`; returns the written LoRA and the per-step losses.

    `components`: an `SDComponents` to train on (default: load `plan.model`/`plan.vae`).
    `checkpointing`: override gradient checkpointing (default: the plan's, on CUDA only).
    `on_step(step, loss)` is called after every optimizer step (tests use it to interrupt).
    Raises `TrainingInterrupted` after Ctrl-C, with the state saved for `resume=True`.
    """
    group = load_dataset(plan.dataset)
    cuda = torch.cuda.is_available()
    # fp16 needs CUDA; bf16 autocast also runs on CPUs (fast on those with bf16 units, e.g. AMX)
    mixed = plan.mixed_precision if plan.mixed_precision == "bf16" or (cuda and plan.mixed_precision == "fp16") else "no"
    accelerator = _accelerator(mixed, cuda)
    device, rank, world, main = accelerator.device, accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if mixed != plan.mixed_precision:
        log.info("no CUDA GPU: training in fp32 on %s (fp16 mixed precision needs a GPU; bf16 works on CPU too)", device)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    checkpointing = plan.gradient_checkpointing and device.type == "cuda" if checkpointing is None else checkpointing

    out_file, state_dir = output_paths(plan)
    run: st.RunState | None = None
    if resume:
        found = find_state(plan)
        if found is None:
            raise CharframeError(f"{out_file.parent}: no saved state of {plan.output_name} to resume; start without --resume")
        run, saved_tensors, optim_state = st.load_state(found)
        st.check_resumable(plan, run, found)
        out_file, state_dir = Path(run.output), found
        log.info("resuming %s at step %d of %d", plan.output_name, run.step, plan.steps)
    else:
        stale = find_state(plan)
        if stale is not None:
            raise CharframeError(
                f"{stale}: an interrupted run of {plan.output_name} can be continued; add --resume, "
                "or delete that folder to start over"
            )
        if out_file.exists():
            free = free_output_path(out_file)
            log.warning("%s exists; writing %s instead (nothing is overwritten)", out_file, free.name)
            out_file, state_dir = free, st.state_dir_for(free)
        stamp = time.strftime("%Y%m%d%H%M%S")
        run = st.RunState(0, str(out_file), str(Path(plan.logging_dir) / f"{plan.output_name}{stamp}"),
                          random.SystemRandom().randint(0, 2**31 - 1), time.time(), plan.to_dict())
        saved_tensors = optim_state = None

    comps = components if components is not None else load_components(plan)
    _warn_long_captions(group, comps.tokenizer, plan)
    _prepare_models(comps, plan, device, weight_dtype, checkpointing)
    torch.manual_seed(plan.seed)  # LoRA initialisation; identical on every process
    net = create_network(NetworkSpec.from_plan(plan), comps.unet, comps.text_encoder).to(device, torch.float32)
    if saved_tensors is not None:
        load_network_weights(net, saved_tensors, str(state_dir))
    elif plan.continue_from:

        tensors, _ = load_lora_file(plan.continue_from)
        load_network_weights(net, tensors, plan.continue_from)
        log.info("continuing from %s", plan.continue_from)
    if world > 1:
        for p in net.parameters():
            torch.distributed.broadcast(p.data, src=0)
    params = [p for p in net.parameters() if p.requires_grad]
    groups = param_groups(net, plan.learning_rate, plan.text_encoder_lr if plan.explicit_lr else None)
    optimizer, optimizer_class = build_optimizer(plan, groups, device)
    scheduler = build_scheduler(plan, optimizer)
    optimizer = accelerator.prepare(optimizer)
    if optim_state is not None:
        optimizer.optimizer.load_state_dict(optim_state["optimizer"])
        scheduler.load_state_dict(optim_state["scheduler"])
        if accelerator.scaler is not None and optim_state.get("scaler"):
            accelerator.scaler.load_state_dict(optim_state["scaler"])

    data = StepData(group, plan.seed, run.step, plan.steps, rank, world, plan.prior_loss_weight)
    workers = plan.num_workers if plan.num_workers is not None else (min(4, max(1, (torch.get_num_threads() or 2) // 2)) if cuda else 0)
    loader = torch.utils.data.DataLoader(data, batch_size=None, collate_fn=unbatched, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    epochs = math.ceil(plan.steps / data.steps_per_epoch)
    base_md = training_metadata(plan, group, comps.info, session_id=run.session_id, started_at=run.started_at,
                                optimizer=optimizer_description(plan, optimizer_class), num_epochs=epochs,
                                batches_per_epoch=data.batches_per_epoch, num_processes=world,
                                mixed_precision=mixed, gradient_checkpointing=checkpointing)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=run.log_dir)
    losses = list(run.losses)
    samples: list[Path] = []
    step = run.step
    updating = False

    def snapshot(at_step: int) -> None:
        run.step, run.losses = at_step, losses
        optim = {"optimizer": optimizer.optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else {}}
        st.save_state(state_dir, run, net, optim)

    from tqdm.auto import tqdm

    bar = tqdm(total=plan.steps, initial=step, desc=plan.output_name, unit="step", disable=not main, dynamic_ncols=True)
    stop = _StopFlag()
    try:
        with stop.installed():
            for batch in loader:
                gen = step_generator(plan.seed, step, rank)
                loss = denoise_loss(comps, batch.pixels, batch.captions, batch.loss_weights, gen, plan=plan,
                                    device=device, weight_dtype=weight_dtype, autocast=accelerator.autocast)
                accelerator.backward(loss)
                updating = True
                _sync_gradients(params, world)
                if plan.max_grad_norm:
                    accelerator.clip_grad_norm_(params, plan.max_grad_norm)
                optimizer.step()
                lrs = current_lrs(optimizer, scheduler)  # the rates this step used
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                updating = False
                step += 1
                value = float(accelerator.reduce(loss.detach(), "mean").item()) if world > 1 else float(loss.item())
                losses.append(value)
                if main:
                    recent = losses[-data.steps_per_epoch :]
                    bar.set_postfix(loss=f"{value:.4f}", avg=f"{sum(recent) / len(recent):.4f}")
                    bar.update(1)
                    writer.add_scalar("loss/current", value, step)
                    writer.add_scalar("loss/average", sum(recent) / len(recent), step)
                    for name, lr in zip(("textencoder", "unet") if len(groups) == 2 else ("unet",), lrs):
                        writer.add_scalar(f"lr/{name}", lr, step)
                    if plan.sample_every and plan.sample_prompts and step % plan.sample_every == 0:
                        samples += _sample_images(comps, plan, out_file, step, accelerator)
                    if plan.save_state_every and step % plan.save_state_every == 0 and step < plan.steps:
                        snapshot(step)
                if on_step is not None:
                    on_step(step, value)
                if _any_process(stop.requested, world, device) and step < plan.steps:
                    raise KeyboardInterrupt
    except BaseException as exc:
        remove_network(net)
        bar.close()
        if writer is not None:
            writer.close()
        if main and step > run.step and not updating:
            snapshot(step)
            log.warning("state saved at step %d/%d in %s; continue with the same command plus --resume",
                        step, plan.steps, state_dir)
        elif main and updating:
            log.error("stopped inside an optimizer step at %d: no new state saved", step)
        if isinstance(exc, KeyboardInterrupt):
            raise TrainingInterrupted(
                f"interrupted at step {step}/{plan.steps}; the state is in {state_dir}: "
                "run the same command with --resume to continue"
            ) from None
        raise
    bar.close()
    remove_network(net)
    result = TrainResult(None, losses, step, Path(run.log_dir) if main else None, samples=samples)
    if main:
        writer.close()

        save_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(plan.save_precision, torch.float32)
        save_lora_file(out_file, network_state_dict(net, save_dtype), step_metadata(base_md, step, epochs))
        plan.save(plan_path_for(out_file))
        st.remove_state(state_dir)
        log.info("wrote %s", out_file)
        result.output = out_file
    accelerator.wait_for_everyone()
    return result


def _sample_images(comps: Any, plan: TrainPlan, out_file: Path, step: int, accelerator: Any) -> list[Path]:
    """Sample images at fixed seeds with the LoRA as trained so far: `<out>/sample/<name>_<step>_<i>_<seed>.png`."""
    from diffusers import DDIMScheduler

    folder = out_file.parent / "sample"
    folder.mkdir(parents=True, exist_ok=True)
    pipe = comps.pipeline(DDIMScheduler.from_config(comps.noise_scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    was_training = comps.unet.training
    comps.unet.eval()
    comps.text_encoder.eval()
    paths = []
    with torch.no_grad(), accelerator.autocast():
        for i, prompt in enumerate(plan.sample_prompts):
            for seed in plan.sample_seeds:
                gen = torch.Generator().manual_seed(int(seed))
                image = pipe(prompt, num_inference_steps=plan.sample_steps, height=plan.sample_size,
                             width=plan.sample_size, generator=gen).images[0]
                path = folder / f"{out_file.stem}_{step:06d}_{i}_{seed}.png"
                image.save(path)
                paths.append(path)
    comps.unet.train(was_training)
    comps.text_encoder.train(was_training)
    return paths
