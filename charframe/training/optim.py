"""Optimizer and learning-rate schedule of a plan, as sd-scripts builds them for the same arguments.

- AdamW8bit: bitsandbytes' 8-bit AdamW on CUDA; elsewhere plain `torch.optim.AdamW` (said once), since
  the 8-bit kernels need a GPU. cosine_with_restarts with one cycle = one cosine decay to zero.
- AdaFactor with relative_step: the optimizer computes its own rate (lr=None); the `adafactor`
  schedule only reports that rate for logging.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from charframe.errors import CharframeError
from charframe.training.plan import OptimizerRecipe
from charframe.util.once import first_time

log = logging.getLogger(__name__)


def build_optimizer(opt: OptimizerRecipe, groups: list[dict[str, Any]], device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """(optimizer, its class path for `ss_optimizer`)."""
    kind = opt.type.lower()
    lr = opt.learning_rate
    if kind == "adamw8bit":
        if device.type == "cuda":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, lr=lr), "bitsandbytes.optim.adamw.AdamW8bit"
        log.log(logging.INFO if first_time("adamw8bit fallback") else logging.DEBUG,
                "8-bit AdamW runs on CUDA GPUs only: on the %s it is plain AdamW (the same algorithm with "
                "full-precision state: more memory)", device.type)
        kind = (opt.cpu_fallback or "AdamW").lower()
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr), "torch.optim.adamw.AdamW"
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        args = dict(opt.args)
        if args.get("relative_step", True):
            for g in groups:
                g.pop("lr", None)
            lr = None
        return Adafactor(groups, lr=lr, **args), "transformers.optimization.Adafactor"
    raise CharframeError(f"optimizer {opt.type!r} is not supported by the built-in trainer; use the {{param}} kohya engine",
                         param="engine")


def build_scheduler(opt: OptimizerRecipe, steps: int, optimizer: torch.optim.Optimizer) -> Any:
    name = opt.scheduler.lower()
    if name == "adafactor":
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer)
    from diffusers.optimization import get_scheduler

    extra = {"num_cycles": opt.scheduler_cycles} if name == "cosine_with_restarts" else {}
    try:
        return get_scheduler(name, optimizer, num_warmup_steps=0, num_training_steps=steps, **extra)
    except ValueError as exc:
        raise CharframeError(f"lr scheduler {opt.scheduler!r}: {exc}") from None


def current_lrs(optimizer: torch.optim.Optimizer, scheduler: Any) -> list[float]:
    """The rate of each parameter group now (Adafactor's relative rate when it sets its own)."""
    try:
        lrs = scheduler.get_last_lr()
    except (AttributeError, IndexError, TypeError):
        lrs = [g.get("lr") or 0.0 for g in optimizer.param_groups]
    return [float(x) for x in lrs]
