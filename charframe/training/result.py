"""What a training run hands back, and how an interrupted one ends (the same for every engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from charframe.errors import CharframeError


class TrainingInterrupted(CharframeError):
    """Ctrl-C or SIGTERM: the state is saved; the message says how to continue."""

    exit_code = 130


@dataclass
class TrainResult:
    output: Path | None  # the LoRA file (None when interrupted, or on processes other than the main one)
    losses: list[float]
    steps_done: int
    log_dir: Path | None
    state_dir: Path | None = None  # set while a resumable state exists
    samples: list[Path] = field(default_factory=list)
