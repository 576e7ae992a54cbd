"""A step call for the executor tests: the real compression, unless a file `die-here` lies in the LoRA's folder —
then the process running it is killed outright (SIGKILL: what the kernel's out-of-memory killer or a lost node
does), once: the file is removed first, so a rerun compresses."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from charframe.lora.ops.compress import compress_file

MARKER = "die-here"


def compress_or_die(path, rule, **kwargs):
    marker = Path(path).parent / MARKER
    if marker.is_file():
        marker.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return compress_file(path, rule, **kwargs)
