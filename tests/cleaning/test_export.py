"""export: multi-size subsets, area downscaling, never upscaling, backups, alpha_mask subsets and their TOML."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from charframe.character import load_character
from charframe.cleaning.clean import clean_set
from charframe.cleaning.images import read_image
from charframe.cleaning.pick import pick_set
from charframe.cleaning.export import export_set
from charframe.dataset.naming import parse_subset_name
from charframe.dataset.toml_writer import write_dataset_toml
from charframe.errors import CharframeError
from charframe.testing.figures import make_project
from charframe.util import toml as tomlio


@pytest.fixture()
def picked(tmp_path: Path):
    c = load_character(make_project(tmp_path, ("f00", "f02"), candidates=2, size=128))
    clean_set(c, "face", method="flood", progress=False)
    pick_set(c, "face", manual=["f00:0", "f02:1"])
    return c


def test_export_sizes_area_downscaling_and_no_upscaling(picked, caplog) -> None:
    caplog.set_level("INFO", logger="charframe")
    written = export_set(picked, "face", sizes=[64, 128, 512])
    ds = picked.root / "LoRAInput" / "4_krnk"
    assert sorted(p.relative_to(ds).as_posix() for p in written) == [
        "krnk girl_f0064/f00.png", "krnk girl_f0064/f02.png", "krnk girl_f0128/f00.png", "krnk girl_f0128/f02.png"]
    assert "4_krnk (krnk face): not upscaled, skipped: 512px (source 128px): f00, f02" in caplog.text
    assert caplog.text.count("not upscaled") == 1
    caplog.clear()
    src = read_image(picked.work_dir("face") / "clean/f00-0.png", 3)
    assert np.array_equal(read_image(ds / "krnk girl_f0128/f00.png", 3), src)
    assert np.array_equal(read_image(ds / "krnk girl_f0064/f00.png", 3),
                          cv2.resize(src, (64, 64), interpolation=cv2.INTER_AREA))
    assert export_set(picked, "face", sizes=[64, 128, 512]) == []  # up to date: the skip note is not said again
    assert "0 file(s) written for 2 code(s) at 64, 128, 512 px" in caplog.text and "upscaled" not in caplog.text


def _replaced(root: Path, rel: str) -> list[Path]:
    return sorted((root / "LoRAWork" / "replaced").glob(f"*/{rel}"))


def test_a_retouch_is_kept_until_its_pick_changes_then_set_aside(picked) -> None:
    export_set(picked, "face", sizes=[64])
    target = picked.root / "LoRAInput/4_krnk/krnk girl_f0064/f02.png"
    cv2.imwrite(str(target), np.zeros((64, 64, 3), np.uint8))  # a hand edit
    assert export_set(picked, "face", sizes=[64]) == []  # same pick, same settings: the retouch stays
    assert read_image(target, 3).max() == 0
    pick_set(picked, "face", manual=["f00:0", "f02:0"])
    assert [p.name for p in export_set(picked, "face", sizes=[64])] == ["f02.png"]
    [moved] = _replaced(picked.root, "LoRAInput/4_krnk/krnk girl_f0064/f02.png")
    assert read_image(moved, 3).max() == 0  # the edit is recoverable
    assert read_image(target, 3).max() > 0


def test_the_dataset_follows_picks_sizes_and_exclusions(picked) -> None:
    """Issue 19 point 2: a size removed, a code excluded, a pick too small for every size: their images leave."""
    import dataclasses

    ds = picked.root / "LoRAInput/4_krnk"
    export_set(picked, "face", sizes=[64, 128])
    assert sorted(p.name for p in ds.iterdir() if p.is_dir()) == ["krnk girl_f0064", "krnk girl_f0128"]
    (ds / "krnk girl_f0128" / "f00.txt").write_text("krnk, a caption prepare wrote")
    (ds / "krnk girl_f0128" / ".charframe-captions.json").write_text("{}")
    export_set(picked, "face", sizes=[64])
    assert sorted(p.name for p in ds.iterdir() if p.is_dir()) == ["krnk girl_f0064"]  # the 128 folder left
    assert _replaced(picked.root, "LoRAInput/4_krnk/krnk girl_f0128/f00.txt")  # with its captions
    assert len(_replaced(picked.root, "LoRAInput/4_krnk/krnk girl_f0128/*.png")) == 2
    excluded = dataclasses.replace(picked, export=dataclasses.replace(picked.export, exclude=("f02",)))
    export_set(excluded, "face", sizes=[64])
    assert sorted(p.name for p in (ds / "krnk girl_f0064").glob("*.png")) == ["f00.png"]
    export_set(picked, "face", sizes=[64])  # exclusion lifted: back
    assert sorted(p.name for p in (ds / "krnk girl_f0064").glob("*.png")) == ["f00.png", "f02.png"]
    from charframe.cleaning.images import write_png

    write_png(picked.work_dir("face") / "clean/f02-2.png", np.zeros((1, 1, 3), np.uint8))
    write_png(picked.work_dir("face") / "alpha/f02-2.png", np.zeros((1, 1, 4), np.uint8))
    pick_set(picked, "face", manual=["f02:2"])  # a 1×1 candidate picked by hand
    export_set(picked, "face", sizes=[64])
    assert sorted(p.name for p in (ds / "krnk girl_f0064").glob("*.png")) == ["f00.png"]


def test_a_dataset_image_deleted_by_hand_stays_deleted(picked) -> None:
    ds = picked.root / "LoRAInput/4_krnk/krnk girl_f0064"
    export_set(picked, "face", sizes=[64])
    (ds / "f02.png").unlink()
    assert export_set(picked, "face", sizes=[64]) == []
    assert not (ds / "f02.png").exists()
    pick_set(picked, "face", manual=["f02:0"])  # a new pick: a new picture, exported again
    assert [p.name for p in export_set(picked, "face", sizes=[64])] == ["f02.png"]


def test_an_image_placed_by_hand_is_never_touched(picked) -> None:
    ds = picked.root / "LoRAInput/4_krnk/krnk girl_f0064"
    ds.mkdir(parents=True)
    cv2.imwrite(str(ds / "f00.png"), np.zeros((64, 64, 3), np.uint8))
    assert [p.name for p in export_set(picked, "face", sizes=[64])] == ["f02.png"]
    assert read_image(ds / "f00.png", 3).max() == 0


def test_alpha_mask_subsets_and_dataset_toml(picked) -> None:
    export_set(picked, "face", sizes=[128], alpha_mask=True)
    ds = picked.root / "LoRAInput/4_krnk"
    rgba = read_image(ds / "krnk girl_alpha_f0128/f00.png", 4)
    assert rgba[0, 0, 3] == 0 and rgba[64, 64, 3] == 255
    name = parse_subset_name("krnk girl_alpha_f0128")
    assert (name.alpha_mask, name.class_tokens, name.size.size) == (True, "krnk girl", 128)
    data = tomlio.loads(write_dataset_toml(ds).read_text(encoding="utf-8"))
    subsets = {Path(s["image_dir"]).name: s for d in data["datasets"] for s in d["subsets"]}
    assert subsets["krnk girl_alpha_f0128"]["alpha_mask"] is True
    assert "alpha_mask" not in subsets["krnk girl_f0128"]
    assert subsets["krnk girl_alpha_f0128"]["class_tokens"] == "krnk girl"


def test_export_errors(picked, tmp_path: Path) -> None:
    with pytest.raises(CharframeError, match="multiples of 8"):
        export_set(picked, "face", sizes=[100])
    with pytest.raises(CharframeError, match="no outfit 'sf'"):
        export_set(picked, "body-sf")
    (picked.work_dir("face") / "picks.toml").unlink()
    with pytest.raises(CharframeError, match="no picks yet"):
        export_set(picked, "face")


def test_body_set_goes_to_the_body_dataset(tmp_path: Path) -> None:
    from charframe.cleaning.images import write_png
    from charframe.testing.figures import compose_figure, figure_mask, write_template_mask

    char = make_project(tmp_path, (), candidates=0, character_extra='[outfits]\nsf = "sailor uniform"\n')
    c = load_character(char)
    cover = figure_mask((128, 64))
    write_template_mask(tmp_path, "b03", cover)
    write_png(c.work_dir("body-sf") / "raw/b03-0.png", compose_figure(cover))
    clean_set(c, "body-sf", method="flood", progress=False)
    assert pick_set(c, "body-sf") == {"b03": 0}
    written = export_set(c, "body-sf", sizes=[64, 128])  # 64 px would be 32×64: under the 64 px bucket, skipped
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["LoRAInput/2_krnksf_krnk/krnksf girl_b0128/b03.png"]
    assert read_image(written[0], 3).shape == (128, 64, 3)  # the longer side is the size


def test_two_characters_face_sets_share_a_group_dataset(picked) -> None:
    """Each set retires only its own images: exporting krnk's face set again never removes tyank's."""
    import dataclasses
    import shutil

    tyank = dataclasses.replace(picked, keyword="tyank")
    shutil.copytree(picked.work_dir("face"), tyank.work_dir("face"))
    export_set(picked, "face", sizes=[64], dataset="1_pair")
    export_set(tyank, "face", sizes=[64], dataset="1_pair")
    export_set(picked, "face", sizes=[64], dataset="1_pair")
    ds = picked.root / "LoRAInput" / "1_pair"
    assert sorted(p.name for p in ds.iterdir() if p.is_dir()) == ["krnk girl_f0064", "tyank girl_f0064"]
    assert len(list((ds / "tyank girl_f0064").glob("*.png"))) == 2
