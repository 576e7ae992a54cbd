"""Dataset TOML semantics as sd-scripts reads them: inheritance, repeats, buckets, captions, reg, order."""

from pathlib import Path

import numpy as np
import pytest
import torch

from charframe.errors import CharframeError
from charframe.training.data import bucket_resolutions, load_dataset, select_bucket
from charframe.training.images import StepData, load_pixels, sample_rng
from train_data import one_thread, write_images, write_toml  # noqa: F401 (autouse fixture)


def test_inheritance_repeats_and_class_token_fallback(tmp_path: Path) -> None:
    a = tmp_path / "krnk girl_f0064"
    b = tmp_path / "krnk girl_noflip_f0064"
    write_images(a, 3, captions=[True, True, False])  # third image: no caption file
    write_images(b, 2, captions=False, prefix="b0")
    toml = write_toml(
        tmp_path / "d.toml",
        {"num_repeats": 4, "caption_extension": ".txt", "flip_aug": True, "color_aug": True},
        [{"resolution": 64, "batch_size": 3, "subsets": [
            {"image_dir": str(a), "class_tokens": "krnk girl"},
            {"image_dir": str(b), "num_repeats": 1, "flip_aug": False, "class_tokens": "tyank"},
        ]}],
    )
    group = load_dataset(toml)
    ds = group.datasets[0]
    s0, s1 = ds.subsets
    assert (s0.num_repeats, s0.flip_aug, s0.color_aug, s0.caption_extension) == (4, True, True, ".txt")
    assert (s1.num_repeats, s1.flip_aug, s1.color_aug) == (1, False, True)  # subset beats general
    assert ds.resolution == (64, 64) and ds.batch_size == 3
    captions = [img.caption for img in ds.images]
    assert captions == ["krnk, white background, from front"] * 2 + ["krnk girl", "tyank", "tyank"]
    assert group.num_train_images == 3 * 4 + 2 * 1
    # every image appears `repeats` times per epoch: 14 items in batches of 3 (one bucket) → 5 batches
    assert group.batches_per_epoch() == 5
    seen = [i for ref in group.epoch_batches(31337, 0) for i in ref.images]
    assert sorted(seen) == sorted([0] * 4 + [1] * 4 + [2] * 4 + [3, 4])
    tf = group.tag_frequency()
    assert tf["krnk girl_f0064"] == {"krnk": 2, "white background": 2, "from front": 2, "krnk girl": 1}
    assert group.dataset_dirs() == {"krnk girl_f0064": {"n_repeats": 4, "img_count": 3},
                                    "krnk girl_noflip_f0064": {"n_repeats": 1, "img_count": 2}}


def test_defaults_are_sd_scripts(tmp_path: Path) -> None:
    a = tmp_path / "x"
    write_images(a, 1)
    (a / "f00.caption").write_text("from a caption file")
    group = load_dataset(write_toml(tmp_path / "d.toml", {}, [{"resolution": [64, 64], "subsets": [{"image_dir": str(a)}]}]))
    ds = group.datasets[0]
    s = ds.subsets[0]
    assert (s.num_repeats, s.caption_extension, s.flip_aug, s.color_aug) == (1, ".caption", False, False)
    assert (ds.batch_size, ds.enable_bucket, ds.min_bucket_reso, ds.max_bucket_reso, ds.bucket_reso_steps) == (1, False, 256, 1024, 64)
    assert ds.images[0].caption == "from a caption file"


def test_errors_name_the_file_and_key(tmp_path: Path) -> None:
    a = tmp_path / "x"
    write_images(a, 1)
    with pytest.raises(CharframeError, match=r"d\.toml:2: general\.colour_aug: unknown key \(did you mean .color_aug.\?\)"):
        load_dataset(write_toml(tmp_path / "d.toml", {"colour_aug": True}, [{"resolution": 64, "subsets": [{"image_dir": str(a)}]}]))
    with pytest.raises(CharframeError, match="no resolution"):
        load_dataset(write_toml(tmp_path / "d.toml", {}, [{"subsets": [{"image_dir": str(a)}]}]))
    with pytest.raises(CharframeError, match="image_dir 'missing' not found"):
        load_dataset(write_toml(tmp_path / "d.toml", {}, [{"resolution": 64, "subsets": [{"image_dir": "missing"}]}]))


def test_relative_image_dir_from_the_toml_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "ds" / "krnk girl_f0064", 1)
    toml = write_toml(tmp_path / "ds" / "d.toml", {}, [{"resolution": 64, "subsets": [{"image_dir": "krnk girl_f0064"}]}])
    assert load_dataset(toml).datasets[0].subsets[0].image_dir == (tmp_path / "ds" / "krnk girl_f0064").resolve()


def test_bucket_resolutions_match_sd_scripts() -> None:
    resos = bucket_resolutions((512, 512), 256, 1024, 64)
    assert (512, 512) in resos and (256, 1024) in resos and (1024, 256) in resos and (384, 640) in resos
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in resos)
    assert len(resos) == 17 and resos == sorted(resos)  # sd-scripts makes the same 17


@pytest.mark.parametrize(
    "size,no_upscale,bucket,resized",
    [
        ((512, 512), False, (512, 512), (512, 512)),
        ((256, 256), False, (512, 512), (512, 512)),  # upscaled to the 512x512 bucket
        ((600, 400), False, (640, 384), (640, 427)),  # nearest aspect bucket, covered then cropped
        ((256, 256), True, (256, 256), (256, 256)),  # bucket_no_upscale: kept small
        ((300, 200), True, (256, 192), (300, 200)),  # cropped down to the 64 px grid
        ((1024, 1024), True, (512, 512), (512, 512)),  # shrunk to the resolution's area
    ],
)
def test_select_bucket(size, no_upscale, bucket, resized) -> None:
    predefined = None if no_upscale else bucket_resolutions((512, 512))
    assert select_bucket(size, predefined, 512 * 512, 64) == (bucket, resized)


def test_select_bucket_equals_sd_scripts_bucket_manager_on_6000_sizes() -> None:
    """`tests/data/sd_scripts_buckets.json.gz`: 6,000 image sizes (random, common aspect ratios, tiny ones)
    for five resolutions, with and without bucket_no_upscale, run through sd-scripts 48d368fa's own
    `BucketManager.select_bucket` (min 256, max 1024, 64 px steps). None marks the sizes it crashes on
    (a side under 64 px with no upscale); charframe refuses those with a message instead."""
    import gzip
    import json

    cases = json.loads(gzip.decompress((Path(__file__).parents[1] / "data" / "sd_scripts_buckets.json.gz").read_bytes()))
    assert len(cases) == 6000
    wrong = []
    for reso, no_upscale, size, bucket, resized in cases:
        predefined = None if no_upscale else bucket_resolutions(tuple(reso), 256, 1024, 64)
        ours, our_resized = select_bucket(tuple(size), predefined, reso[0] * reso[1], 64)
        if bucket is None:
            if min(ours) >= 64:  # the dataset loader refuses buckets under one step
                wrong.append((reso, no_upscale, size, "sd-scripts crashes", ours))
        elif (list(ours), list(our_resized)) != (bucket, resized):
            wrong.append((reso, no_upscale, size, (bucket, resized), (ours, our_resized)))
    assert wrong == []


def test_buckets_in_a_dataset_and_batches_share_a_bucket(tmp_path: Path) -> None:
    write_images(tmp_path / "sq", 3, (128, 128), prefix="s")
    write_images(tmp_path / "wide", 2, (256, 128), prefix="w")
    toml = write_toml(tmp_path / "d.toml", {"enable_bucket": True, "bucket_no_upscale": True, "batch_size": 2},
                      [{"resolution": [256, 256], "subsets": [{"image_dir": str(tmp_path / "sq")}, {"image_dir": str(tmp_path / "wide")}]}])
    group = load_dataset(toml)
    ds = group.datasets[0]
    assert set(ds.buckets()) == {(128, 128), (256, 128)}
    for ref in group.epoch_batches(1, 0):
        assert len({ds.images[i].bucket for i in ref.images}) == 1
    item = StepData(group, 1, 0, 3)[0]
    assert item.pixels.shape[2:] in ((128, 128), (128, 256))


def test_bucket_limits_are_checked_like_sd_scripts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """sd-scripts stops when bucketing is on and the resolution lies outside min/max_bucket_reso; the
    built-in trainer refuses the same TOMLs (naming the file and the key to add), so both engines agree."""
    write_images(tmp_path / "a", 1)
    sub = [{"image_dir": str(tmp_path / "a")}]
    with pytest.raises(CharframeError, match=r"d\.toml: \[\[datasets\]\] #1: resolution \[64, 64\] is below min_bucket_reso 256; add `min_bucket_reso = 64`"):
        load_dataset(write_toml(tmp_path / "d.toml", {"enable_bucket": True}, [{"resolution": 64, "subsets": sub}]))
    with pytest.raises(CharframeError, match="above max_bucket_reso 1024; add `max_bucket_reso = 1280`"):
        load_dataset(write_toml(tmp_path / "d.toml", {"enable_bucket": True}, [{"resolution": [1280, 512], "subsets": sub}]))
    assert load_dataset(write_toml(tmp_path / "d.toml", {}, [{"resolution": 64, "subsets": sub}])).datasets[0].min_bucket_reso == 256
    ds = load_dataset(write_toml(tmp_path / "d.toml", {"enable_bucket": True, "min_bucket_reso": 100, "max_bucket_reso": 1000},
                                 [{"resolution": 64, "subsets": sub}])).datasets[0]
    assert (ds.min_bucket_reso, ds.max_bucket_reso) == (64, 1024)  # snapped outward to the 64 px step
    assert "moved to multiples of 64" in caplog.text


def test_reg_images_fill_up_to_the_training_count_and_are_weighted(tmp_path: Path) -> None:
    write_images(tmp_path / "train", 3)
    write_images(tmp_path / "reg", 2, prefix="r")
    toml = write_toml(tmp_path / "d.toml", {"num_repeats": 3},
                      [{"resolution": 64, "subsets": [{"image_dir": str(tmp_path / "train")},
                                                      {"image_dir": str(tmp_path / "reg"), "is_reg": True, "num_repeats": 1}]}])
    group = load_dataset(toml)
    ds = group.datasets[0]
    reg = [img for img in ds.images if img.is_reg]
    # 9 training images with repeats; 2 reg images repeated round-robin up to 9: 5 + 4
    assert [img.repeats for img in reg] == [5, 4]
    assert group.num_train_images == 9 and group.num_reg_images == 2
    data = StepData(group, 7, 0, group.batches_per_epoch(), prior_loss_weight=0.25)
    weights = sorted(float(data[i].loss_weights[0]) for i in range(len(data)))
    assert weights == [0.25] * 9 + [1.0] * 9


def test_epoch_order_is_a_function_of_seed_and_epoch(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 6)
    group = load_dataset(write_toml(tmp_path / "d.toml", {"num_repeats": 2}, [{"resolution": 64, "subsets": [{"image_dir": str(tmp_path / "a")}]}]))
    e0 = group.epoch_batches(31337, 0)
    assert e0 == group.epoch_batches(31337, 0)
    assert e0 != group.epoch_batches(31337, 1) and e0 != group.epoch_batches(1, 0)
    # two processes split each step's batches; together they cover the epoch
    p0, p1 = (StepData(group, 31337, 0, 6, rank=r, world=2) for r in (0, 1))
    assert sorted(p0.batch_ref(s).images + p1.batch_ref(s).images for s in range(6)) == sorted(
        e0[2 * s].images + e0[2 * s + 1].images for s in range(6))


def test_flip_and_color_aug(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 1)
    group = load_dataset(write_toml(tmp_path / "d.toml", {"flip_aug": True}, [{"resolution": 64, "subsets": [{"image_dir": str(tmp_path / "a")}]}]))
    ds = group.datasets[0]
    entry, subset = ds.images[0], ds.subsets[0]
    outs = [load_pixels(entry, subset, sample_rng(0, 0, i, 0)) for i in range(16)]
    blue_left = [bool(o[2, 32, 0] > 0.9) for o in outs]  # the blue edge is on the left unless flipped
    assert 3 <= blue_left.count(False) <= 13
    assert all(torch.equal(o, outs[0]) or torch.equal(o, outs[0].flip(-1)) for o in outs)
    assert torch.equal(load_pixels(entry, subset, sample_rng(0, 0, 5, 0)), outs[5])  # reproducible
    subset.flip_aug, subset.color_aug = False, True
    colored = [load_pixels(entry, subset, sample_rng(0, 0, i, 0)) for i in range(30)]
    plain = load_pixels(entry, subset.__class__(**{**subset.__dict__, "color_aug": False}), sample_rng(0, 0, 0, 0))
    changed = [not torch.equal(c, plain) for c in colored]
    assert 2 <= sum(changed) <= 20  # about one in three
    assert max(float((c - plain).abs().max()) for c in colored) < 0.5  # a mild change
    assert all(c.min() >= -1 and c.max() <= 1 for c in colored)


def test_text_chunks_like_sd_scripts() -> None:
    from charframe.models.tiny import build_tiny_sd
    from charframe.training.text import encode, token_count, tokenize

    comps = build_tiny_sd()
    tok = comps.tokenizer
    long = ", ".join(["white background"] * 60)  # 60 x (2 words + comma) tokens, minus a comma
    assert token_count(tok, long) == 179
    ids = tokenize(tok, [long, "krnk"], 150)
    assert ids.shape == (2, 2, 77)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert (ids[:, :, 0] == bos).all() and (ids[:, :, -1] == eos).all()
    flat = tok(long, truncation=True, max_length=152).input_ids
    assert ids[0, 0, 1:76].tolist() == flat[1:76] and ids[0, 1, 1:76].tolist() == flat[76:151]
    with torch.no_grad():
        states = encode(comps.text_encoder, ids, clip_skip=2)
        one = encode(comps.text_encoder, tokenize(tok, ["krnk"]), clip_skip=2)
        last = encode(comps.text_encoder, tokenize(tok, ["krnk"]), clip_skip=1)
    assert states.shape == (2, 152, 32) and one.shape == (1, 77, 32)
    assert torch.allclose(last, comps.text_encoder(tokenize(tok, ["krnk"])[:, 0])[0])
    assert not torch.allclose(one, last)
