"""One training sample: the image scaled and cropped to its bucket, augmented, as a tensor; its caption.

Random choices (flip, colour, crop position, caption shuffle) come from a generator seeded by
(seed, epoch, position in the epoch), never from global state, so a resumed run and worker
processes reproduce them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from charframe.training.data import BatchRef, DatasetGroup, ImageEntry, TrainingSubset


def sample_rng(seed: int, epoch: int, batch: int, item: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(batch), int(item), 0x1A6E])


def _crop_box(resized: tuple[int, int], bucket: tuple[int, int], rng: np.random.Generator | None) -> tuple[int, int]:
    dx, dy = resized[0] - bucket[0], resized[1] - bucket[1]
    if rng is None:
        return dx // 2, dy // 2
    return int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))


def hue_shift(arr: np.ndarray, shift: float) -> np.ndarray:
    """sd-scripts' hue shift: `shift` in OpenCV's 180 hue steps, on the RGB array read as BGR (as
    sd-scripts passes it), with its float-to-uint8 truncation; the same pixels for the same shift."""
    import cv2

    hsv = cv2.cvtColor(arr, cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0] + (180 + shift if shift < 0 else shift)) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def raw_gamma(arr: np.ndarray, gamma: float) -> np.ndarray:
    """sd-scripts' "gamma": the power is taken of the raw 0–255 values, not of values scaled to 0–1,
    so 0.95–1.05 darkens or brightens strongly (128 → 100…163); kept for the same training data."""
    return np.clip(arr.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)


def color_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """sd-scripts' color_aug: one time in three, a hue shift of up to ±8 of 180 steps (±16°) or a
    raw gamma of 0.95–1.05, half and half."""
    if rng.random() > 0.33:
        return img
    arr = np.asarray(img)
    out = hue_shift(arr, rng.uniform(-8.0, 8.0)) if rng.random() > 0.5 else raw_gamma(arr, rng.uniform(0.95, 1.05))
    return Image.fromarray(out)


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """sd-scripts' rule, so both engines see the same pixels: OpenCV's area filter when no side
    grows, PIL's Lanczos otherwise (PIL's box filter differs from OpenCV's area by up to 35 levels)."""
    if size[0] <= img.size[0] and size[1] <= img.size[1]:
        import cv2

        return Image.fromarray(cv2.resize(np.asarray(img), size, interpolation=cv2.INTER_AREA))
    return img.resize(size, Image.LANCZOS)


def load_pixels(entry: ImageEntry, subset: TrainingSubset, rng: np.random.Generator) -> torch.Tensor:
    """CHW float tensor in [-1, 1] at the entry's bucket size."""
    return load_sample(entry, subset, rng)[0]


def load_sample(entry: ImageEntry, subset: TrainingSubset,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pixels, alpha mask): the mask (HW in [0, 1]) only for `alpha_mask` subsets, as sd-scripts makes it:
    the image read as RGBA (no alpha channel = all ones), resized, cropped and flipped with the pixels;
    colour augmentation touches RGB only."""
    return load_sample_flipped(entry, subset, rng)[:2]


def load_sample_flipped(entry: ImageEntry, subset: TrainingSubset,
                        rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """`load_sample` and whether the image was flipped (SDXL's crop time id depends on it)."""
    with Image.open(entry.path) as im:
        img = im.convert("RGBA" if subset.alpha_mask else "RGB")
    if img.size != entry.resized:
        img = resize(img, entry.resized)
    left, top = _crop_box(entry.resized, entry.bucket, rng if subset.random_crop else None)
    img = img.crop((left, top, left + entry.bucket[0], top + entry.bucket[1]))
    flipped = bool(subset.flip_aug and rng.random() < 0.5)
    if flipped:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    mask = None
    if subset.alpha_mask:
        mask = torch.from_numpy(np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0)
        img = img.convert("RGB")  # drops alpha, colours kept as stored (not composited), like sd-scripts
    if subset.color_aug:
        img = color_jitter(img, rng)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()), mask, flipped


def shape_caption(caption: str, subset: TrainingSubset, rng: np.random.Generator) -> str:
    """caption_prefix/suffix and shuffle_caption (the first keep_tokens tags stay in place)."""
    if subset.shuffle_caption:
        tags = [t.strip() for t in caption.split(",")]
        keep, rest = tags[: subset.keep_tokens], tags[subset.keep_tokens :]
        caption = ", ".join(keep + [rest[i] for i in rng.permutation(len(rest))])
    if subset.caption_prefix:
        caption = f"{subset.caption_prefix} {caption}"
    if subset.caption_suffix:
        caption = f"{caption} {subset.caption_suffix}"
    return caption


@dataclass
class Batch:
    pixels: torch.Tensor  # B,3,H,W in [-1, 1]
    captions: list[str]
    loss_weights: torch.Tensor  # B: 1 for training images, prior_loss_weight for reg images
    error: str | None = None  # an image could not be read: "<file>: why" (pixels are then empty)
    masks: torch.Tensor | None = None  # B,H,W alpha masks when a subset has alpha_mask (others all ones)
    #: per image: (file width, file height, flipped) — what SDXL's size/crop conditioning is computed from
    sizes: list[tuple[int, int, bool]] = field(default_factory=list)


class StepData(torch.utils.data.Dataset):
    """Item i = the batch this process trains on at step `first_step + i` (for a DataLoader).

    An epoch is the dataset's batch list (see `DatasetGroup.epoch_batches`); with `world` processes
    each step takes `world` consecutive batches, process `rank` the rank-th (wrapping at the end).
    """

    def __init__(self, group: DatasetGroup, seed: int, first_step: int, last_step: int,
                 rank: int = 0, world: int = 1, prior_loss_weight: float = 1.0) -> None:
        self.group, self.seed, self.first_step, self.last_step = group, seed, first_step, last_step
        self.rank, self.world, self.prior_loss_weight = rank, world, prior_loss_weight
        self.batches_per_epoch = group.batches_per_epoch()
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / world)
        self._epochs: dict[int, list[BatchRef]] = {}

    def __len__(self) -> int:
        return self.last_step - self.first_step

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, position in the epoch's batch list) of this process' batch at `step`."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return epoch, (k * self.world + self.rank) % self.batches_per_epoch

    def batch_ref(self, step: int) -> BatchRef:
        epoch, position = self.locate(step)
        if epoch not in self._epochs:
            self._epochs = {epoch: self.group.epoch_batches(self.seed, epoch)}
        return self._epochs[epoch][position]

    def __getitem__(self, i: int) -> Batch:
        step = self.first_step + i
        epoch, position = self.locate(step)
        ref = self.batch_ref(step)
        ds = self.group.datasets[ref.dataset]
        pixels, masks, captions, weights, sizes = [], [], [], [], []
        for j, index in enumerate(ref.images):
            entry = ds.images[index]
            subset = ds.subsets[entry.subset]
            rng = sample_rng(self.seed, epoch, position, j)
            try:
                image, mask, flipped = load_sample_flipped(entry, subset, rng)
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
                # returned, not raised: a DataLoader worker's exception reaches the loop as a traceback dump
                return Batch(torch.empty(0), [], torch.empty(0), f"{entry.path}: cannot be decoded ({e}); "
                             "replace or remove the image")
            pixels.append(image)
            masks.append(mask)
            captions.append(shape_caption(entry.caption, subset, rng))
            weights.append(self.prior_loss_weight if entry.is_reg else 1.0)
            sizes.append((entry.size[0], entry.size[1], flipped))
        return Batch(torch.stack(pixels), captions, torch.tensor(weights), masks=stack_masks(masks, pixels), sizes=sizes)


def stack_masks(masks: list[torch.Tensor | None], pixels: list[torch.Tensor]) -> torch.Tensor | None:
    """None when no image has a mask; else every mask, all ones for the images without one (as sd-scripts)."""
    if all(m is None for m in masks):
        return None
    return torch.stack([m if m is not None else torch.ones(p.shape[1:]) for m, p in zip(masks, pixels)])


def unbatched(item: Batch) -> Batch:
    """DataLoader collate_fn with batch_size=None: every item already is a batch."""
    return item
