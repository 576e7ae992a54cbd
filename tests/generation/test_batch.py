"""Batched candidates (issue 23): the candidates of one code made in one batch, each seed with its own generator,
give the pictures they give one at a time — within one 8-bit level on the CPU (batched CPU kernels sum in another
order; the PNG files are not byte-identical), with identical PNG parameters — and the batch size follows the GPU's
memory (1 on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.cli import main
from charframe.errors import CharframeError
from charframe.generation.batch import batch_size, images_for_memory
from charframe.generation.generate import generate_set
from charframe.generation.samplers import find_sampler
from charframe.generation.pnginfo import read_parameters
from charframe.util.manifest import Manifest
from generation_helpers import make_project
from train_data import one_thread  # noqa: F401

#: the stated tolerance: largest difference of one channel of one pixel, and the mean difference (8-bit levels)
MAX_LEVELS, MEAN_LEVELS = 1, 0.05


def _generate(root: Path, batch: int, **kw) -> Path:
    c = make_project(root, **kw)
    generate_set(c, "f", codes=["f00", "f12"], candidates=3, progress=False, device="cpu", batch=batch)
    if kw.get("hires", 1.0) == 1.0:
        generate_set(c, "b", outfit="sf", codes=["b02"], candidates=3, progress=False, device="cpu", batch=batch)
    return root / "LoRAWork" / "krnk"


@pytest.mark.parametrize("sampler, steps, hires", [("Euler a", 2, 1.0), ("DPM++ 2M Karras", 3, 1.5)])
def test_a_batch_gives_each_seed_its_own_picture(tmp_path: Path, sampler: str, steps: int, hires: float) -> None:
    alone = _generate(tmp_path / "alone", 1, sampler=sampler, steps=steps, hires=hires)
    batched = _generate(tmp_path / "batched", 3, sampler=sampler, steps=steps, hires=hires)
    files = sorted(p.relative_to(alone) for p in alone.rglob("raw/*.png"))
    assert len(files) == (6 if hires > 1 else 9)
    worst = []
    for rel in files:
        a = np.asarray(Image.open(alone / rel)).astype(int)
        b = np.asarray(Image.open(batched / rel)).astype(int)
        assert a.shape == b.shape
        diff = np.abs(a - b)
        worst.append((int(diff.max()), float(diff.mean())))
        assert read_parameters(alone / rel) == read_parameters(batched / rel)
    assert max(m for m, _ in worst) <= MAX_LEVELS and max(m for _, m in worst) <= MEAN_LEVELS, worst
    # the seeds are the candidates' own: a batch is not one picture three times
    with Image.open(batched / "face/raw/f00-0.png") as x, Image.open(batched / "face/raw/f00-1.png") as y:
        assert np.abs(np.asarray(x).astype(int) - np.asarray(y).astype(int)).mean() > 10
    # the records are the same: a batch-made candidate is current for a one-at-a-time rerun and the reverse
    for sub in ("face", "body-sf") if hires == 1.0 else ("face",):
        ra, rb = (Manifest.load(root / sub / ".charframe-generate.json") for root in (alone, batched))
        assert len(ra.outputs) == 6 if sub == "face" else 3
        assert {k: v["params"] for k, v in ra.outputs.items()} == {k: v["params"] for k, v in rb.outputs.items()}


def test_the_batch_follows_the_gpu_memory_and_is_one_on_the_cpu() -> None:
    assert [images_for_memory(g) for g in (2, 6, 8, 11.9, 24, 80)] == [1, 2, 4, 4, 8, 8]
    assert batch_size("cpu", 512, 512, 1.0, 4) == 1
    assert batch_size("cuda", 512, 512, 1.0, 4, gib=24) == 4        # never more than the candidates
    assert batch_size("cuda", 512, 512, 1.0, 16, gib=24) == 8
    assert batch_size("cuda", 512, 1024, 1.0, 16, gib=24) == 4      # a body image has twice the pixels
    assert batch_size("cuda", 512, 512, 1.5, 16, gib=12) == 3       # the hires pass: 2.25× the pixels
    assert batch_size("cuda", 768, 768, 2.0, 4, gib=4) == 1         # at least one


def test_a_batch_below_one_is_refused(tmp_path: Path) -> None:
    c = make_project(tmp_path)
    with pytest.raises(CharframeError, match="batch must be at least 1"):
        generate_set(c, "f", codes=["f00"], progress=False, device="cpu", batch=0)


def test_a_sampler_whose_noise_is_not_per_image_is_made_one_at_a_time() -> None:
    """The SDE samplers draw their noise from a Brownian tree of one image (seeded with its seed), not from the
    per-image generators: a batch could not give each seed its own picture, so they batch 1."""
    assert find_sampler("DPM++ SDE Karras").sampler.brownian_noise
    assert find_sampler("DPM++ 2M SDE").sampler.brownian_noise
    assert not find_sampler("Euler a").sampler.brownian_noise and not find_sampler("DPM++ 2M Karras").sampler.brownian_noise


def test_the_cli_names_its_flag_for_a_bad_batch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    c = make_project(tmp_path)
    assert main(["generate", str(c.path), "--codes", "f00", "--batch", "0", "--device", "cpu"]) == 2
    assert "--batch must be at least 1" in capsys.readouterr().err
