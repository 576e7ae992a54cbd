import logging
import math
import os
import sys
from pathlib import Path

import pytest
from dataset_fixtures import KRNK_SIZES, krnk_tree, put_images

from charframe.util import toml as tomlio
from charframe.dataset.toml_writer import (
    CLASS_NAMES,
    Dataset,
    DatasetConfig,
    General,
    Subset,
    batch_sizes,
    build_dataset_config,
    dataset_dirs,
    load_vram_profiles,
    toml_path,
    write_dataset_toml,
)
from charframe.errors import CharframeError


def test_krnk_example_parses_to_the_conventions_structure(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    path = write_dataset_toml(ds)
    assert path == ds / "4_krnk.toml"
    data = tomlio.load(path)
    assert data["general"] == {
        "color_aug": True,
        "enable_bucket": True,
        "bucket_no_upscale": True,
        "caption_extension": ".txt",
        "num_repeats": 4,
    }
    assert [(d["resolution"], d["batch_size"]) for d in data["datasets"]] == [([512, 512], 2), ([768, 768], 1)]
    low, mid = data["datasets"]
    assert [s["image_dir"] for s in low["subsets"]] == [os.path.abspath(ds / f"krnk girl_f{n:04d}") for n in KRNK_SIZES[:4]]
    assert [s["image_dir"] for s in mid["subsets"]] == [os.path.abspath(ds / f"krnk girl_f{n:04d}") for n in KRNK_SIZES[4:]]
    for s in low["subsets"] + mid["subsets"]:
        assert s == {"image_dir": s["image_dir"], "class_tokens": "krnk girl", "flip_aug": True}
    # the text looks like the sd-scripts examples
    text = path.read_text(encoding="utf-8")
    assert "[general]\ncolor_aug = true\n" in text and "caption_extension = '.txt'" in text
    assert "[[datasets]]\nresolution = [512, 512]\nbatch_size = 2\n" in text and "  [[datasets.subsets]]\n" in text


def test_krnk_with_12gb_profile_and_relative_paths(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    scripts = tmp_path / "sd-scripts"
    scripts.mkdir()
    data = tomlio.load(write_dataset_toml(ds, vram="12gb", relative_to=scripts))
    assert [d["batch_size"] for d in data["datasets"]] == [4, 2]
    assert data["datasets"][0]["subsets"][0]["image_dir"] == os.path.join("..", "LoRAInput", "4_krnk", "krnk girl_f0128")


def test_class_pairs_are_width_then_height(tmp_path: Path) -> None:
    ds = tmp_path / "2_x"
    put_images(ds / "wide_b0768", ["b00.png"], (768, 512))
    put_images(ds / "tall_b0768", ["b01.png"], (512, 768))
    put_images(ds / "big_b1024", ["b02.png"], (1024, 1536))
    cfg = build_dataset_config(ds, vram="12gb")
    got = {d.resolution: (d.batch_size, [Path(s.image_dir).name for s in d.subsets]) for d in cfg.datasets}
    assert got == {(768, 512): (3, ["wide_b0768"]), (512, 768): (3, ["tall_b0768"]), (1024, 1024): (1, ["big_b1024"])}
    assert cfg.general.num_repeats == 2


def test_flip_and_reg_markers_and_round_trip(tmp_path: Path) -> None:
    ds = tmp_path / "3_y"
    put_images(ds / "y girl_noflip_f0512", ["f00.png"], (512, 512))
    put_images(ds / "y girl_flip_f0512", ["f00.png"], (512, 512))
    put_images(ds / "transparent_reg_f0512", ["blank.png"], (512, 512))
    path = write_dataset_toml(ds)
    cfg = DatasetConfig.from_dict(tomlio.load(path))
    subsets = {Path(s.image_dir).name: s for s in cfg.datasets[0].subsets}
    assert subsets["y girl_noflip_f0512"].flip_aug is False
    assert subsets["y girl_flip_f0512"].flip_aug is True
    assert subsets["transparent_reg_f0512"].is_reg is True and subsets["transparent_reg_f0512"].class_tokens == "transparent"
    assert "is_reg = true" in path.read_text() and path.read_text().count("is_reg") == 1
    assert DatasetConfig.from_dict(cfg.to_dict()) == cfg


TRICKY = [
    "krnk girl, cat ears_f0512",
    "it's krnk_f0512",
    'say "krnk"_f0512',
    "黒猫 少女、ねこみみ_f0512",
    "tab\tand 'both' \"quotes\"_f0512",
    "trailing space _f0512",
]
if sys.platform != "win32":
    TRICKY.append("back\\slash\\n_f0512")


def test_tricky_folder_names_round_trip(tmp_path: Path) -> None:
    ds = tmp_path / "LoRAInput" / "1_it's 黒猫, \"x\""
    for name in TRICKY:
        put_images(ds / name, ["f00.png"], (512, 512))
    path = write_dataset_toml(ds)
    assert path.name == "1_it's 黒猫, \"x\".toml"
    cfg = DatasetConfig.from_dict(tomlio.load(path))
    subsets = cfg.datasets[0].subsets
    assert sorted(s.image_dir for s in subsets) == sorted(os.path.abspath(ds / n) for n in TRICKY)
    tokens = {Path(s.image_dir).name: s.class_tokens for s in subsets}
    assert tokens["krnk girl, cat ears_f0512"] == "krnk girl"
    assert tokens['say "krnk"_f0512'] == 'say "krnk"'
    assert tokens["黒猫 少女、ねこみみ_f0512"] == "黒猫 少女、ねこみみ"
    assert cfg.general.num_repeats == 1


def test_config_dataclasses_round_trip_through_text() -> None:
    cfg = DatasetConfig(
        General(num_repeats=7),
        (Dataset((512, 768), 3, (Subset("C:\\data\\it's", "a, b", False, True), Subset('q"\\', "x"))),),
    )
    assert DatasetConfig.from_dict(tomlio.loads(cfg.dumps("a header\n\nline"))) == cfg
    with pytest.raises(CharframeError, match="keep_tokens"):
        DatasetConfig.from_dict({"general": {"keep_tokens": 1}})


def test_mixed_classes_name_every_offending_file_and_leave_toml_alone(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    old = toml_path(ds)
    old.write_text("# my old toml\n", encoding="utf-8")
    put_images(ds / "krnk girl_f0512", ["f20.png", "f21.png"], (768, 768))
    put_images(ds / "krnk girl_f0512", ["f22.png"], (1024, 600))
    with pytest.raises(CharframeError) as info:
        write_dataset_toml(ds)
    msg = str(info.value)
    assert "krnk girl_f0512" in msg and "3 size classes" in msg
    for part in ("f20.png 768x768", "f21.png 768x768", "f22.png 1024x600", "512x512"):
        assert part in msg
    assert old.read_text(encoding="utf-8") == "# my old toml\n"
    assert sorted(p.name for p in ds.iterdir() if p.is_file()) == ["4_krnk.toml"]


def test_corrupt_image_and_empty_dataset(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    (ds / "krnk girl_f0256" / "f05.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    with pytest.raises(CharframeError, match=r"f05\.png.*cannot read the image size"):
        write_dataset_toml(ds)
    assert not toml_path(ds).exists()
    empty = tmp_path / "3_empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    with pytest.raises(CharframeError, match="empty dataset"):
        write_dataset_toml(empty)
    assert not toml_path(empty).exists()


def test_missing_repeats_prefix_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = tmp_path / "krnk"
    for n in range(3):
        put_images(ds / f"krnk_f{n:04d}", ["f00.png"], (512, 512))
    with caplog.at_level(logging.WARNING, logger="charframe"):
        cfg = build_dataset_config(ds)
    assert cfg.general.num_repeats == 1
    assert sum("no repeats prefix" in r.getMessage() for r in caplog.records) == 1


def test_rewrite_keeps_a_backup_only_when_changed(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    path = write_dataset_toml(ds)
    first = path.read_bytes()
    write_dataset_toml(ds)
    assert path.read_bytes() == first and not path.with_name("4_krnk.toml.bak").exists()
    write_dataset_toml(ds, vram="24gb")
    assert path.with_name("4_krnk.toml.bak").read_bytes() == first
    assert tomlio.load(path)["datasets"][0]["batch_size"] == 10


def test_lorainput_stands_for_its_datasets(tmp_path: Path) -> None:
    krnk_tree(tmp_path)
    put_images(tmp_path / "LoRAInput" / "2_krnksf_krnk" / "krnksf girl_b0768", ["b00.png"], (512, 768))
    (tmp_path / "LoRAInput" / "model.safetensors").write_bytes(b"x")
    assert [p.name for p in dataset_dirs([tmp_path / "LoRAInput"])] == ["2_krnksf_krnk", "4_krnk"]
    ds = tmp_path / "LoRAInput" / "4_krnk"
    assert dataset_dirs([ds]) == [ds]


def test_vram_profiles() -> None:
    profiles = load_vram_profiles()
    assert set(profiles) >= {"default", "8gb", "12gb", "16gb", "24gb"}
    assert batch_sizes("default") == {c: (2 if c == "LOW_LOW" else 1) for c in CLASS_NAMES}
    twelve = {"LOW_LOW": 4, "MID_LOW": 3, "LOW_MID": 3, "MID_MID": 2, "HIGH_LOW": 2, "LOW_HIGH": 2}
    assert batch_sizes("12gb") == {c: twelve.get(c, 1) for c in CLASS_NAMES}
    assert batch_sizes("12") == batch_sizes("12GB") == batch_sizes("12gb")
    # more memory never means a smaller batch; width/height symmetric
    order = [batch_sizes(p) for p in ("default", "8gb", "12gb", "16gb", "24gb")]
    for small, big in zip(order, order[1:]):
        assert all(small[c] <= big[c] for c in CLASS_NAMES)
    for table in order:
        assert all(table[f"{w}_{h}"] == table[f"{h}_{w}"] for w in ("LOW", "MID", "HIGH") for h in ("LOW", "MID", "HIGH"))
    # 16gb/24gb follow floor(budget / tiles) with the budgets documented in the data file
    tiles = {"LOW": 1, "MID": 1.5, "HIGH": 2}
    for name, budget in (("16gb", 6.3), ("24gb", 10.3)):
        assert batch_sizes(name) == {c: max(1, math.floor(budget / (tiles[c.split("_")[0]] * tiles[c.split("_")[1]]))) for c in CLASS_NAMES}
    with pytest.raises(CharframeError, match="unknown VRAM profile '10gb'"):
        batch_sizes("10gb")


def test_user_vram_profile_from_charframe_toml(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    (tmp_path / "charframe.toml").write_text("[vram_profiles.mine]\nLOW_LOW = 7\nother = 5\n")
    data = tomlio.load(write_dataset_toml(ds, vram="mine"))
    assert [d["batch_size"] for d in data["datasets"]] == [7, 5]
    (tmp_path / "charframe.toml").write_text("[vram_profiles.bad]\nLOW_LOW = 0\n")
    with pytest.raises(CharframeError, match=r"charframe.toml:2: vram_profiles.bad.LOW_LOW: expected an integer from 1 to 4096, got 0"):
        write_dataset_toml(ds, vram="bad")
