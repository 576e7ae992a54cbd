"""The optimizer branch the GPU takes: bitsandbytes' real AdamW8bit with charframe's parameter groups.

bitsandbytes >= 0.45 also runs its 8-bit optimizers on CPU tensors, so the exact code of the CUDA
branch of `build_optimizer` (and the state save/load that `--resume` relies on) runs here; only the
choice of branch is forced by passing the CUDA device.
"""

import copy

import torch

from charframe.training.optim import build_optimizer, build_scheduler
from charframe.training.plan import make_plan


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))


def _groups(model: torch.nn.Module, plan) -> list[dict]:
    te, unet = list(model[0].parameters()), list(model[2].parameters())
    return [{"params": te, "lr": plan.optimizer.text_encoder_lr}, {"params": unet, "lr": plan.optimizer.learning_rate}]


def _steps(model, opt, sched, x, y, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_adamw8bit_branch_trains_and_resumes_exactly() -> None:
    plan = make_plan("Lora3x3A50p-AdamW8", 8, 1000, 40, dataset="d.toml", out="x")
    model = _model()
    opt, name = build_optimizer(plan.optimizer, _groups(model, plan), torch.device("cuda"))
    assert name == "bitsandbytes.optim.adamw.AdamW8bit" and type(opt).__name__ == "AdamW8bit"
    assert [g["lr"] for g in opt.param_groups] == [plan.optimizer.text_encoder_lr, plan.optimizer.learning_rate]  # 440e-6 / 1000e-6
    sched = build_scheduler(plan.optimizer, plan.recipe.steps, opt)
    x, y = torch.randn(32, 64), torch.randn(32, 64)
    first = _steps(model, opt, sched, x, y, 20)
    assert first[-1] < first[0] * 0.9
    big = model[2].weight  # 8,192 values: bitsandbytes keeps 8-bit states for tensors of 4,096 or more
    assert opt.state[big]["state1"].dtype == torch.uint8

    # what a saved state holds, restored into fresh objects, continues exactly like the uninterrupted run
    saved_model, saved_opt, saved_sched = (copy.deepcopy(s.state_dict()) for s in (model, opt, sched))
    rest = _steps(model, opt, sched, x, y, 20)
    again = _model()
    again.load_state_dict(saved_model)
    opt2, _ = build_optimizer(plan.optimizer, _groups(again, plan), torch.device("cuda"))
    sched2 = build_scheduler(plan.optimizer, plan.recipe.steps, opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert _steps(again, opt2, sched2, x, y, 20) == rest
