"""Step checkpoints: the LoRA of every N-th step, saved beside the final one under sd-scripts' names.

`<name>-step00000500.safetensors` (sd-scripts' `STEP_FILE_NAME`, `--save_every_n_steps`): the built-in trainer and
the kohya engine write them alike; the pipeline's score step chooses among them (`pipeline.score`). Kept apart from
`training.outputs` so that listing them (deciding what is stale) loads no torch.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

#: sd-scripts' name of a step checkpoint: `<output name>-step00000500` (train_util's STEP_FILE_NAME)
STEP_SUFFIX = "-step{:08d}"
_STEP_RE = re.compile(r"-step(\d{8})$")


def checkpoint_path(output: Path, step: int) -> Path:
    """`<stem>-step00000500.safetensors` beside the LoRA `output`."""
    return output.with_name(output.stem + STEP_SUFFIX.format(step) + output.suffix)


def checkpoints(output: Path) -> list[tuple[int, Path]]:
    """(step, file) of the step checkpoints saved beside `output`, by step (the final LoRA itself not included)."""
    found = []
    for p in output.parent.glob(f"{glob.escape(output.stem)}-step{'[0-9]' * 8}{output.suffix}"):
        m = _STEP_RE.search(p.stem)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)
