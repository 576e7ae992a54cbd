"""SDXL's rules that are code rather than a table: the size/crop "time ids" its UNet is conditioned on.

SDXL's added embedding reads six numbers per image — original height and width, crop top and left, target
height and width — besides the pooled text embedding. sd-scripts computes them from the image file's size and
its bucket, and the crop it reports is not the crop it made: it is where the image would sit if it were
scaled to fit *inside* the bucket (Stability AI's preprocessing, `BucketManager.get_crop_ltrb`), mirrored when
the image is flipped. Trained LoRAs expect these values, so they are reproduced here exactly.
"""

from __future__ import annotations


def crop_ltrb(bucket: tuple[int, int], image: tuple[int, int]) -> tuple[float, float, float, float]:
    """sd-scripts' (left, top, right, bottom) for an image of `image` (w, h) in a bucket of `bucket` (w, h)."""
    bucket_ar, image_ar = bucket[0] / bucket[1], image[0] / image[1]
    if bucket_ar > image_ar:  # the bucket is wider: the height fits
        width, height = bucket[1] * image_ar, bucket[1]
    else:
        width, height = bucket[0], bucket[0] / image_ar
    left, top = (bucket[0] - width) // 2, (bucket[1] - height) // 2
    return left, top, left + width, top + height


def time_ids(original: tuple[int, int], bucket: tuple[int, int], flipped: bool = False) -> tuple[int, ...]:
    """(original h, original w, crop top, crop left, target h, target w) as sd-scripts' SDXL training passes them,
    for an image file of size `original` (w, h) trained in `bucket` (w, h)."""
    left, top, right, _ = crop_ltrb(bucket, original)
    if flipped:
        left = bucket[0] - right
    return int(original[1]), int(original[0]), int(top), int(left), int(bucket[1]), int(bucket[0])
