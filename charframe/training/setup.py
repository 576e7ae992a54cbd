"""Everything a run needs before its first step: precision, the run's state (new or resumed), the models
prepared for training, the network, optimizer, schedule and data loader, and the metadata known at start.

`begin_run` decides new vs resumed from the files alone (before any model is loaded, so a wrong
`resume` is refused at once); `build_session` does the heavy part.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charframe.deps import place
from charframe.errors import CharframeError
from charframe.families.family import get_family, require
from charframe.lora.file_family import check_same_family
from charframe.lora.io import read_network
from charframe.models.clip import check_clip_skip
from charframe.models.embeddings import split_bundle
from charframe.models.load import load_sd
from charframe.training import state as st
from charframe.training.adapters import NetworkSpec, create_network, load_network_weights, param_groups
from charframe.training.conditioning import TextCache
from charframe.training.latent_cache import LatentCache
from charframe.training.data import DatasetGroup
from charframe.training.distributed import accelerator as make_accelerator, broadcast_parameters
from charframe.training.images import StepData, unbatched
from charframe.training.metadata import optimizer_description, training_metadata
from charframe.training.optim import build_optimizer, build_scheduler
from charframe.training.checkpoints import checkpoints
from charframe.training.outputs import LOG_STAMP, find_state, output_paths
from charframe.training.pivotal import PivotalRun, setup_pivotal
from charframe.training.plan import Runtime, TrainPlan, trains_text_encoder
from charframe.training.text import token_count
from charframe.util.files import free_output_path

log = logging.getLogger(__name__)


@dataclass
class Start:
    """A run's starting point: new (step 0) or read back from a saved state."""

    run: st.RunState
    out_file: Path
    state_dir: Path
    tensors: dict[str, torch.Tensor] | None = None  # the saved network, when resumed
    optim_state: dict[str, Any] | None = None


def begin_run(plan: TrainPlan, resume: bool) -> Start:
    """The state to resume (checked to train the same thing), or a fresh run on a free output name."""
    out_file, state_dir = output_paths(plan.io, plan.output_name)
    found = find_state(plan.io, plan.output_name)
    if resume:
        if found is None:
            raise CharframeError(f"{out_file.parent}: no saved state of {plan.output_name} to resume; "
                                 "start without {param}", param="resume")
        run, tensors, optim_state = st.load_state(found)
        st.check_resumable(plan, run, found)
        log.info("resuming %s at step %d of %d", plan.output_name, run.step, plan.recipe.steps)
        return Start(run, Path(run.output), found, tensors, optim_state)
    if found is not None:
        raise CharframeError(f"{found}: an interrupted run of {plan.output_name} can be continued; add {{param}}, "
                             "or delete that folder to start over", param="resume")
    if out_file.exists() or checkpoints(out_file):
        n, free = 1, free_output_path(out_file)
        while free.exists() or checkpoints(free):
            free, n = out_file.with_name(f"{out_file.stem}-{n}{out_file.suffix}"), n + 1
        what = "exists" if out_file.exists() else "has step checkpoints"
        log.warning("%s %s; writing %s instead (nothing is overwritten)", out_file, what, free.name)
        out_file, state_dir = free, st.state_dir_for(free)
    stamp = time.strftime(LOG_STAMP)
    run = st.RunState(0, str(out_file), str(Path(plan.io.logging_dir) / f"{plan.output_name}{stamp}"),
                      random.SystemRandom().randint(0, 2**31 - 1), time.time(), plan.to_dict())
    return Start(run, out_file, state_dir)


@dataclass(frozen=True)
class Precision:
    mixed: str  # what accelerate runs: "fp16", "bf16" or "no"
    weight_dtype: torch.dtype  # of the frozen model
    checkpointing: bool


def choose_precision(runtime: Runtime, cuda: bool, checkpointing: bool | None) -> Precision:
    """fp16 needs CUDA; bf16 autocast also runs on CPUs (fast on those with bf16 units, e.g. AMX)."""
    wanted = runtime.mixed_precision
    mixed = wanted if wanted == "bf16" or (cuda and wanted == "fp16") else "no"
    if mixed != wanted:
        log.info("no CUDA GPU: training in fp32 (fp16 mixed precision needs a GPU; bf16 works on CPU too)")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    ckpt = runtime.gradient_checkpointing and cuda if checkpointing is None else checkpointing
    return Precision(mixed, dtype, ckpt)


def warn_long_captions(group: DatasetGroup, tokenizer: Any, max_token_length: int | None) -> None:
    limit = max_token_length or 75
    first = {}  # caption → an image using it (charframe datasets repeat captions a lot)
    for d in group.datasets:
        for e in d.images:
            first.setdefault(e.caption, e.path)
    long = [(path, n) for caption, path in first.items() if (n := token_count(tokenizer, caption)) > limit]
    if long:
        path, n = long[0]
        hint = " or shorten them" if limit >= 225 else "; train with a max token length of 150 or 225 to keep them"
        log.warning("%d distinct caption(s) exceed %d tokens and are truncated (e.g. %s: %d tokens)%s",
                    len(long), limit, path, n, hint)


def prepare_models(comps: Any, attention: str, device: torch.device, precision: Precision,
                   train_text_encoder: bool = True) -> None:
    """Freeze the base model, move it to the device in the weight dtype, pick attention and checkpointing
    (for the text encoders only when they are trained: frozen ones run once per caption, without gradients)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for m in comps.modules():
        m.requires_grad_(False)
        place(m, device, precision.weight_dtype)
    if attention == "xformers" and device.type == "cuda":
        comps.unet.enable_xformers_memory_efficient_attention()
    else:
        comps.unet.set_attn_processor(AttnProcessor2_0())
    if precision.checkpointing:
        comps.unet.enable_gradient_checkpointing()
        for te in comps.text_encoders if train_text_encoder else ():  # transformers 5 renamed the method
            if hasattr(te, "activation_checkpointing_enable"):
                te.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    comps.unet.train(precision.checkpointing)
    for te in comps.text_encoders:
        te.train(precision.checkpointing and train_text_encoder)
    comps.vae.eval()


def check_recipe(recipe: Any, family: Any) -> None:
    """Recipe values the family's conditioning cannot honour."""
    if family.data.get("training", {}).get("conditioning") == "sdxl" and recipe.max_token_length:
        raise CharframeError(f"{{param}} {recipe.max_token_length} is not yet supported for {family.name} training; "
                             "train with 75 tokens", param="max_token_length")


@dataclass
class Session:
    """A run ready for its first step (see `build_session`)."""

    plan: TrainPlan
    start: Start
    comps: Any
    accelerator: Any
    precision: Precision
    net: torch.nn.Module
    params: list[torch.nn.Parameter]
    lr_names: tuple[str, ...]
    optimizer: Any
    scheduler: Any
    data: StepData
    loader: Any
    epochs: int
    base_metadata: dict[str, str]
    text_cache: Any = None  # frozen text encoders' outputs by caption (training.conditioning.TextCache)
    pivotal: PivotalRun | None = None  # the trigger embedding and the reused ones (pivotal tuning)
    latent_cache: Any = None  # the frozen VAE's latent distributions by pixels (training.latent_cache)

    device = property(lambda self: self.accelerator.device)
    rank = property(lambda self: self.accelerator.process_index)
    world = property(lambda self: self.accelerator.num_processes)
    main = property(lambda self: self.accelerator.is_main_process)
    weight_dtype = property(lambda self: self.precision.weight_dtype)

    def snapshot(self, step: int, losses: list[float]) -> Path:
        """Save the resumable state at `step` (network, optimizer, schedule, scaler, losses)."""
        run = self.start.run
        run.step, run.losses = step, losses
        optim = {"optimizer": self.optimizer.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else {}}
        return st.save_state(self.start.state_dir, run, self.net, optim,
                             self.pivotal.state_tensors() if self.pivotal is not None else None)


def build_session(plan: TrainPlan, group: DatasetGroup, start: Start, *, components: Any = None,
                  checkpointing: bool | None = None) -> Session:
    """Load (or take) the model, attach the network, build optimizer, schedule and loader."""
    cuda = torch.cuda.is_available()
    precision = choose_precision(plan.runtime, cuda, checkpointing)
    acc = make_accelerator(precision.mixed, cuda)
    device, world = acc.device, acc.num_processes
    comps = components if components is not None else load_sd(plan.io.model, plan.io.vae, family=plan.io.family,
                                                                prediction=plan.io.prediction)
    family = get_family(comps.family)
    require(family, "train", str(plan.io.model or "the tiny demo model"))
    check_recipe(plan.recipe, family)
    check_clip_skip(plan.recipe.clip_skip, comps.text_encoder)
    warn_long_captions(group, comps.tokenizer, plan.recipe.max_token_length)
    train_te = trains_text_encoder(plan.recipe, family)
    prepare_models(comps, plan.runtime.attention, device, precision, train_te)
    torch.manual_seed(plan.recipe.seed)  # LoRA initialisation; identical on every process
    encoders = (comps.text_encoders if len(comps.text_encoders) > 1 else comps.text_encoder) if train_te else None
    net = create_network(NetworkSpec.from_recipe(plan.network), comps.unet, encoders, family).to(device, torch.float32)
    resumed = continued = None
    if start.tensors is not None:
        resumed, tensors = split_bundle(start.tensors)
        load_network_weights(net, tensors, str(start.state_dir))
    elif plan.io.continue_from:
        previous = read_network(plan.io.continue_from)
        check_same_family(plan.io.continue_from, get_family(previous.family) if previous.family else None,
                          get_family(comps.family))
        continued, tensors = split_bundle(previous.state_dict())
        load_network_weights(net, tensors, plan.io.continue_from)
        log.info("continuing from %s", plan.io.continue_from)
    broadcast_parameters(net, world)
    pivotal = setup_pivotal(plan.pivotal, plan.recipe.steps, group, comps, plan.io.dataset, resumed=resumed,
                            continued=continued, continued_from=plan.io.continue_from or "")
    opt = plan.optimizer
    groups = param_groups(net, opt.learning_rate, opt.text_encoder_lr if opt.explicit_lr else None)
    lr_names = ("textencoder", "unet") if len(groups) == 2 else ("unet",)
    if pivotal is not None and pivotal.parameter is not None:
        if world > 1:
            torch.distributed.broadcast(pivotal.parameter.data, src=0)
        groups += pivotal.param_group(opt.explicit_lr)
        lr_names += ("embedding",)
    optimizer, optimizer_class = build_optimizer(opt, groups, device)
    scheduler = build_scheduler(opt, plan.recipe.steps, optimizer)
    optimizer = acc.prepare(optimizer)
    if start.optim_state is not None:
        optimizer.optimizer.load_state_dict(start.optim_state["optimizer"])
        scheduler.load_state_dict(start.optim_state["scheduler"])
        if acc.scaler is not None and start.optim_state.get("scaler"):
            acc.scaler.load_state_dict(start.optim_state["scaler"])
    data = StepData(group, plan.recipe.seed, start.run.step, plan.recipe.steps, acc.process_index, world,
                    plan.recipe.prior_loss_weight)
    workers = plan.runtime.num_workers
    if workers is None:
        workers = min(4, max(1, (torch.get_num_threads() or 2) // 2)) if cuda else 0
    loader = torch.utils.data.DataLoader(data, batch_size=None, collate_fn=unbatched, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    epochs = math.ceil(plan.recipe.steps / data.steps_per_epoch)
    schedule = comps.noise_scheduler.config
    info = {**comps.info, "prediction_type": schedule.prediction_type,
            "zero_terminal_snr": bool(schedule.get("rescale_betas_zero_snr", False))}
    base = training_metadata(plan, group, info, session_id=start.run.session_id, started_at=start.run.started_at,
                             optimizer=optimizer_description(opt, optimizer_class), num_epochs=epochs,
                             batches_per_epoch=data.batches_per_epoch, num_processes=world,
                             mixed_precision=precision.mixed, gradient_checkpointing=precision.checkpointing)
    trained = pivotal is not None and pivotal.parameter is not None
    # a trigger in training changes the text encoder's output at every step: nothing to cache then
    cache = TextCache(plan.recipe.text_cache) if not train_te and plan.recipe.text_cache and not trained else None
    params = [p for p in net.parameters() if p.requires_grad] + ([pivotal.parameter] if trained else [])
    return Session(plan, start, comps, acc, precision, net, params, lr_names, optimizer, scheduler, data, loader,
                   epochs, base, text_cache=cache, pivotal=pivotal,
                   latent_cache=LatentCache())
