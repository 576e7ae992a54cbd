"""Masked loss (`alpha_mask = true`, sd-scripts' apply_masked_loss): the maths on tiny tensors, checked by hand,
and the alpha mask read, cropped and flipped with its image.

`data/sd_scripts_masked_loss.npz` was recorded with sd-scripts 48d368fa (48d368fa557731ad0488c07304dfeba8c07910eb)
by a script outside this repository that imported sd-scripts' own `library` (only the absent `imagesize` package
and the two sample-image pipeline modules, which need a class transformers 5 removed, set as empty sys.modules
entries) and ran, on fixed seeded inputs:
- `loss_<tag>_*`: `train_util.conditional_loss(pred, target, "l2", "none")` → `apply_masked_loss(loss,
  {"alpha_masks": alpha / 255})` → `loss.mean(dim=[1, 2, 3])` (train_network.py's order), for a 2×4×8×8 and a
  2×4×6×10 loss with soft uint8 alpha masks at image size (64×64, 48×80);
- `img_<tag>_*`: an RGBA (one LA) PNG through `train_util.load_image(path, alpha=True)` →
  `trim_and_resize_if_required(False, img, bucket, resized)` → optional `img[:, ::-1, :]` flip → the alpha
  channel / 255 as `BaseDataset.__getitem__` does; stored: the input pixels, (size, resized, bucket), the mask and
  the RGB channels, for a downscale (OpenCV area), an upscale (PIL Lanczos on RGBA), no resize, and an LA image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from charframe.training.data import ImageEntry, TrainingSubset, load_dataset
from charframe.training.images import StepData, load_sample, stack_masks
from charframe.training.loss import masked_mse
from train_data import write_toml

REF = np.load(Path(__file__).parents[1] / "data" / "sd_scripts_masked_loss.npz")


def test_masked_mse_by_hand() -> None:
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # squared errors 1, 4, 9, 16
    mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0],  # 4x4 image mask → 2x2 latent by area average
                          [1.0, 1.0, 0.0, 1.0],
                          [0.5, 0.5, 0.0, 0.0],
                          [0.5, 0.5, 0.0, 0.0]]])
    # block averages: top-left 1, top-right 0.25, bottom-left 0.5, bottom-right 0
    expected = (1 * 1 + 4 * 0.25 + 9 * 0.5 + 16 * 0) / 4  # mean over all latent pixels, masked or not
    assert float(masked_mse(pred, target, mask)[0]) == pytest.approx(expected)  # 1.625
    assert float(masked_mse(pred, target, None)[0]) == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert float(masked_mse(pred, target, torch.ones(1, 4, 4))[0]) == pytest.approx(7.5)  # all opaque = no mask


def test_masks_per_item_and_channel() -> None:
    pred = torch.zeros(2, 4, 1, 1)
    target = torch.ones(2, 4, 1, 1) * torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    masks = torch.stack([torch.full((8, 8), 0.25), torch.ones(8, 8)])
    assert masked_mse(pred, target, masks).tolist() == pytest.approx([0.25, 4.0])


def _rgba(path: Path) -> Path:
    arr = np.zeros((4, 8, 4), np.uint8)
    arr[..., :3] = 200
    arr[:, :4, 3] = 255  # left half opaque, right half transparent
    arr[:, 4:, 3] = 0
    arr[0, 0, 3] = 51  # one pixel at 0.2
    Image.fromarray(arr, "RGBA").save(path)
    return path


def _subset(folder: Path, alpha: bool, flip: bool = False) -> TrainingSubset:
    return TrainingSubset(folder, 1, False, None, ".txt", flip, False, False, False, 0, None, None, alpha_mask=alpha)


def test_alpha_is_read_with_the_image_and_flipped_with_it(tmp_path: Path) -> None:
    path = _rgba(tmp_path / "a.png")
    entry = ImageEntry(path, "", (8, 4), (8, 4), (8, 4), 0, False, 1)
    pixels, mask = load_sample(entry, _subset(tmp_path, True), np.random.default_rng(0))
    assert pixels.shape == (3, 4, 8) and mask.shape == (4, 8)
    assert float(mask[0, 0]) == pytest.approx(0.2) and float(mask[1, 0]) == 1.0 and float(mask[:, 4:].max()) == 0.0
    assert float(pixels[:, :, 4:].min()) == pytest.approx(200 / 127.5 - 1)  # colours of transparent pixels kept
    flipped = None
    for seed in range(20):  # a seed whose flip coin comes up
        rng = np.random.default_rng(seed)
        if rng.random() < 0.5:
            _, flipped = load_sample(entry, _subset(tmp_path, True, flip=True), np.random.default_rng(seed))
            break
    assert flipped is not None and torch.equal(flipped, torch.flip(mask, [1]))
    _, none = load_sample(entry, _subset(tmp_path, False), np.random.default_rng(0))
    assert none is None


def test_images_without_alpha_get_ones(tmp_path: Path) -> None:
    Image.new("RGB", (8, 4), (9, 9, 9)).save(tmp_path / "rgb.png")
    entry = ImageEntry(tmp_path / "rgb.png", "", (8, 4), (8, 4), (8, 4), 0, False, 1)
    _, mask = load_sample(entry, _subset(tmp_path, True), np.random.default_rng(0))
    assert torch.equal(mask, torch.ones(4, 8))
    stacked = stack_masks([None, torch.zeros(4, 8)], [torch.zeros(3, 4, 8)] * 2)
    assert torch.equal(stacked[0], torch.ones(4, 8)) and torch.equal(stacked[1], torch.zeros(4, 8))
    assert stack_masks([None, None], [torch.zeros(3, 4, 8)] * 2) is None


def test_alpha_mask_subset_option_reaches_the_batches(tmp_path: Path) -> None:
    folder = tmp_path / "krnk girl_f0064"
    folder.mkdir()
    arr = np.zeros((64, 64, 4), np.uint8)
    arr[..., 3] = 128
    Image.fromarray(arr, "RGBA").save(folder / "f00.png")
    toml = write_toml(tmp_path / "d.toml", {"caption_extension": ".txt"},
                      [{"resolution": 64, "subsets": [{"image_dir": str(folder), "alpha_mask": True}]}])
    group = load_dataset(toml)
    assert group.datasets[0].subsets[0].alpha_mask is True
    batch = StepData(group, 1, 0, 1)[0]
    assert batch.masks.shape == (1, 64, 64) and float(batch.masks.mean()) == pytest.approx(128 / 255)


@pytest.mark.parametrize("tag", ["sq", "wide"])
def test_masked_loss_equals_sd_scripts(tag: str) -> None:
    pred, target = torch.from_numpy(REF[f"loss_{tag}_pred"]), torch.from_numpy(REF[f"loss_{tag}_target"])
    masks = torch.from_numpy(REF[f"loss_{tag}_alpha"]).float() / 255.0
    ours = masked_mse(pred, target, masks)
    assert ours.shape == (2,) and float(ours.std()) > 0.05  # the two items really differ
    np.testing.assert_allclose(ours.numpy(), REF[f"loss_{tag}_per_item"], rtol=0, atol=1e-6)


def _seed_with_flip(flip: bool) -> int:
    """A seed whose flip coin (the first draw when crops are centred) comes up `flip`."""
    return next(s for s in range(100) if (np.random.default_rng(s).random() < 0.5) == flip)


@pytest.mark.parametrize("tag", ["down", "up", "same", "la"])
@pytest.mark.parametrize("flip", [False, True])
def test_alpha_mask_path_equals_sd_scripts(tag: str, flip: bool, tmp_path: Path) -> None:
    arr = REF[f"img_{tag}"]
    path = tmp_path / f"{tag}.png"
    Image.fromarray(arr, "LA" if arr.shape[2] == 2 else "RGBA").save(path)
    size, resized, bucket = (tuple(int(v) for v in row) for row in REF[f"img_{tag}_sizes"])
    entry = ImageEntry(path, "", size, resized, bucket, 0, False, 1)
    pixels, mask = load_sample(entry, _subset(tmp_path, True, flip=flip), np.random.default_rng(_seed_with_flip(flip)))
    key = f"img_{tag}_{'flip' if flip else 'plain'}"
    np.testing.assert_allclose(mask.numpy(), REF[key + "_mask"], rtol=0, atol=1e-6)
    rgb = np.rint((pixels.numpy().transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)
    assert np.array_equal(rgb, REF[key + "_rgb"])
