"""accelerate and the process group: precision per run, gradients averaged, flags shared across processes.

The network is hooked into the UNet rather than DDP-wrapped, so the few collective operations the loop
needs are done here by hand.
"""

from __future__ import annotations

from typing import Any

import torch


def accelerator(mixed: str, cuda: bool) -> Any:
    """accelerate keeps one process-wide precision; a later run in the same process (a pipeline
    training stage after stage, a test) may need another, so only that part of its state is reset.
    The distributed part (processes under `accelerate launch`) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed:  # noqa: SLF001
        AcceleratorState._reset_state(reset_partial_state=False)  # noqa: SLF001
    return Accelerator(mixed_precision=mixed, cpu=not cuda)  # cpu: several processes on CPU use gloo


def sync_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over processes."""
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


def any_process(flag: bool, world: int, device: torch.device) -> bool:
    """True on every process when `flag` is true on one (a Ctrl-C seen by one process stops all)."""
    if world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def broadcast_parameters(module: torch.nn.Module, world: int) -> None:
    """Every process starts from the main process' weights."""
    if world > 1:
        for p in module.parameters():
            torch.distributed.broadcast(p.data, src=0)
