"""The resumable state of an unfinished run: written on Ctrl-C, on a crash, or every N steps.

`<output-dir>/<out>/<file stem>-state/` holds the network in full precision, the optimizer, schedule
and loss-scaler state, the losses so far, and `state.toml` (step, output file, log folder, the plan).
`state.toml` is written last, so a folder without it is an incomplete write and is not trusted.
Random numbers are derived from (seed, step), so nothing else is needed to continue bit-for-bit.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charframe.util import toml as tomlio
from charframe.errors import CharframeError
from charframe.models.checkpoint import pickle_refusal
from charframe.util.files import atomic_path
from charframe.training.plan import TrainPlan

STATE_FILE = "state.toml"
NETWORK_FILE = "network.safetensors"
OPTIM_FILE = "optimizer.pt"

#: Plan values (flat option names) a resumed run may change: they do not change what is trained.
RESUME_MAY_CHANGE = frozenset(
    {"sample_every", "sample_prompts", "sample_seeds", "sample_steps", "sample_size", "save_state_every",
     "save_every_n_steps", "num_workers", "logging_dir", "output_dir"}
)
START_OVER = "delete that folder to start the run over"


@dataclass
class RunState:
    step: int
    output: str  # the LoRA file this run will write
    log_dir: str
    session_id: int
    started_at: float
    plan: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    #: digest of what is trained on (dataset images, captions, TOML, model files): a resume needs the same
    inputs: str = ""


def state_dir_for(output: Path) -> Path:
    return output.with_name(output.stem + "-state")


def save_state(directory: Path, run: RunState, network: torch.nn.Module, optim_state: dict[str, Any],
               extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the state atomically, file by file, `state.toml` last; `extra` tensors (a pivotal run's trigger under
    its bundle key) go into the network file beside the network's."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / STATE_FILE
    if marker.exists():
        marker.unlink()  # the folder is incomplete until the new marker is written
    weights = {k: v.detach().to("cpu").contiguous() for k, v in {**network.state_dict(), **(extra or {})}.items()}
    with atomic_path(directory / NETWORK_FILE) as tmp:
        save_file(weights, str(tmp))
    with atomic_path(directory / OPTIM_FILE) as tmp:
        torch.save(optim_state, tmp)
    tomlio.write(marker, {"state": {k: v for k, v in run.__dict__.items() if k != "plan"}, "plan": run.plan})
    return directory


def load_state(directory: Path) -> tuple[RunState, dict[str, torch.Tensor], dict[str, Any]]:
    """(run info, network tensors, optimizer/schedule state) of a saved state folder."""
    from safetensors.torch import load_file

    marker = directory / STATE_FILE
    if not marker.is_file():
        raise CharframeError(
            f"{directory}: no complete resumable state here (missing {STATE_FILE}); {START_OVER}"
        )
    try:
        data = tomlio.loads(marker.read_text(encoding="utf-8"))
        run = RunState(plan=dict(data["plan"]), **data["state"])
    except (tomlio.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CharframeError(f"{marker}: not a readable training state ({type(e).__name__}: {e}); {START_OVER}") from None
    tensors = _read(directory / NETWORK_FILE, lambda p: load_file(str(p)))
    optim_state = _read(directory / OPTIM_FILE, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    return run, tensors, optim_state


def _read(path: Path, reader: Any) -> Any:
    """A state file read by `reader`; a missing, truncated or foreign file is one message naming it."""
    try:
        return reader(path)
    except Exception as e:  # noqa: BLE001 - safetensors, pickle (weights_only) and zip errors: corrupt, or unsafe
        unsafe, reason = pickle_refusal(e)
        if unsafe:
            raise CharframeError(f"{path}: unsafe: the pickle would import or run code ({reason}), which charframe "
                                 f"never runs; not a state charframe saved: {START_OVER} ({path.parent})") from None
        raise CharframeError(f"{path}: corrupt training state ({reason[:120]}); {START_OVER} "
                             f"({path.parent})") from None


def check_resumable(plan: TrainPlan, run: RunState, directory: Path) -> None:
    """The plan given to resume must train the same thing as the saved one."""
    saved = TrainPlan.from_dict(run.plan, str(directory / STATE_FILE)).flat()
    now = plan.flat()
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_MAY_CHANGE and saved.get(k) != now.get(k))
    if diff:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in diff[:4])
        raise CharframeError(f"{directory}: {{param}} with different settings ({detail}); use the original command",
                             param="resume")


def read_run(directory: Path) -> RunState | None:
    """The run info of a saved state (no tensors read); None when unreadable."""
    try:
        data = tomlio.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        return RunState(plan=dict(data["plan"]), **data["state"])
    except (OSError, tomlio.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None


def remove_state(directory: Path) -> None:
    if directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
