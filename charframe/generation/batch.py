"""How many candidates of one code to generate in one batch (they share the prompt and the control maps).

Batching changes nothing in the pictures: each candidate's noise comes from its own seed's generator
(`passes.Runner.images`), so a seed gives the picture it gives alone, as in WebUI's batches. It only uses the GPU
better: one UNet call for several latents. The size comes from the GPU's memory (charframe/data/generation_batch.toml,
scaled by the pixels of the image); on the CPU it is 1.
"""

from __future__ import annotations

from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

BATCH_FILE = DATA_DIR / "generation_batch.toml"
BASE_PIXELS = 512 * 512


def images_for_memory(gib: float) -> int:
    """The table's 512 px batch for a GPU with `gib` GiB of memory."""
    rows = sorted(tomlio.load(BATCH_FILE)["vram"], key=lambda r: r["gib"])
    return max([r["images"] for r in rows if r["gib"] <= gib] or [1])


def batch_size(device: str, width: int, height: int, hires_scale: float, candidates: int,
               gib: float | None = None) -> int:
    """The batch for images of `width`×`height` (and the hires pass's `hires_scale`) on `device`; `gib`: the
    device's memory (asked of torch when None). 1 on the CPU; never more than `candidates`."""
    if not device.startswith("cuda"):
        return 1
    if gib is None:
        import torch

        gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
    pixels = width * height * max(1.0, hires_scale) ** 2
    return max(1, min(candidates, int(images_for_memory(gib) * BASE_PIXELS / pixels)))
