"""Decode every training image once before step 1, so a bad file is one message naming it, not a crash hours in.

`prepare` and the dataset reader look at image headers only (fast, and enough for buckets and captions);
a truncated file, a header that lies about the size, or a decompression-bomb header (100000×100000)
passes them. A full decode of small training images costs about a millisecond each (see
`benchmarks/train.py`), so the trainer pays it once, on all cores, and names every bad file it finds.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from charframe.errors import CharframeError
from charframe.training.data import DatasetGroup

_LISTED = 3


def image_problem(path: Path, header_size: tuple[int, int] | None = None) -> str | None:
    """Why `path` cannot be trained on (None when it decodes fully, at the size its header gave)."""
    try:
        with Image.open(path) as im:
            if header_size is not None and tuple(im.size) != tuple(header_size):
                return f"its header says {header_size[0]}x{header_size[1]} but it decodes as {im.size[0]}x{im.size[1]}"
            im.load()
    except Image.DecompressionBombError as e:
        return f"too large to decode safely ({str(e).split('(')[0].strip()})"
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        return f"cannot be decoded ({str(e) or type(e).__name__})"
    return None


def check_images(group: DatasetGroup, workers: int | None = None) -> None:
    """Decode every image of `group`; any failure is one `CharframeError` naming the file(s)."""
    entries = {e.path: e.size for d in group.datasets for e in d.images}
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        problems = [(p, why) for p, why in zip(entries, pool.map(image_problem, entries, entries.values())) if why]
    if problems:
        path, why = problems[0]
        more = f" ({len(problems) - 1} more: {', '.join(p.name for p, _ in problems[1:1 + _LISTED])}" \
               f"{', …' if len(problems) > 1 + _LISTED else ''})" if len(problems) > 1 else ""
        raise CharframeError(f"{path}: {why}; re-export or remove the image, then run `charframe prepare` again{more}")
