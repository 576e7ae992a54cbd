"""Batched drawing (pipeline.render): a seed draws the same picture alone or in a batch, pictures come back in
(prompt, seed) order, and prompts that encode to different lengths never share a pipeline call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charframe.models.load import load_sd
from charframe.pipeline.preview_spec import PreviewSettings
from charframe.pipeline.render import _batches, render_row
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)


@pytest.fixture(scope="module")
def pipe():
    comps = load_sd(None)
    p = comps.pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def test_a_seed_draws_the_same_picture_alone_or_in_a_batch(pipe) -> None:
    s = PreviewSettings(scenes=("x",), seeds=(3, 1, 2), steps=2, size=32, cfg=5.0)
    texts = ["krnk, in a forest", "krnk, in a kitchen"]
    calls: list[int] = []
    real = pipe.__class__.__call__

    def counting(self, *a, **k):
        calls.append(k["prompt_embeds"].shape[0])
        return real(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipe.__class__, "__call__", counting)
        alone = render_row(pipe, texts, "lowres", s, 1, batch=1)
        batched = render_row(pipe, texts, "lowres", s, 1, batch=4)
    assert calls == [1] * 6 + [4, 2]  # 6 pictures: one by one, then in batches of at most 4
    a = np.stack([np.asarray(i, dtype=np.int16) for i in alone])
    b = np.stack([np.asarray(i, dtype=np.int16) for i in batched])
    assert a.shape == b.shape == (6, 32, 32, 3)
    assert np.abs(a - b).max() <= 1  # the same pictures (float rounding of a batched convolution at most)
    assert np.abs(a[0] - a[1]).mean() > 5 and np.abs(a[0] - a[3]).mean() > 5  # seeds and prompts differ
    on_cpu = render_row(pipe, texts[:1], "lowres", s, 1)  # on the CPU the default batch is one picture
    assert [np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(on_cpu, alone[:3])] == [True] * 3


def test_prompts_of_different_lengths_are_not_batched_together() -> None:
    short, long_ = torch.zeros(1, 77, 8), torch.zeros(1, 154, 8)
    jobs = [({"prompt_embeds": t}, seed) for t, seed in ((short, 1), (short, 2), (long_, 1), (long_, 2), (short, 3))]
    sizes = [[seed for _, seed in g] for g in _batches(jobs, 8)]
    assert sizes == [[1, 2], [1, 2], [3]]
    assert [[seed for _, seed in g] for g in _batches(jobs[:2], 1)] == [[1], [2]]
