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
    assert "krnk face → " in caplog.text and "4 file(s) written for 2 code(s) at 64, 128, 512 px" in caplog.text
    assert "never upscaled, so no 512 px copy of 2 codes (pictures are 128 px)" in caplog.text
    assert caplog.text.count("never upscaled") == 1
    caplog.clear()
    src = read_image(picked.work_dir("face") / "clean/f00-0.png", 3)
    assert np.array_equal(read_image(ds / "krnk girl_f0128/f00.png", 3), src)
    assert np.array_equal(read_image(ds / "krnk girl_f0064/f00.png", 3),
                          cv2.resize(src, (64, 64), interpolation=cv2.INTER_AREA))
    assert export_set(picked, "face", sizes=[64, 128, 512]) == []  # up to date: one short line, no skip note
    assert "up to date (2 code(s) at 64, 128, 512 px)" in caplog.text and "upscaled" not in caplog.text


def test_hand_edited_file_is_backed_up(picked) -> None:
    export_set(picked, "face", sizes=[64])
    target = picked.root / "LoRAInput/4_krnk/krnk girl_f0064/f02.png"
    cv2.imwrite(str(target), np.zeros((64, 64, 3), np.uint8))  # a hand edit
    pick_set(picked, "face", manual=["f00:0", "f02:0"])
    assert [p.name for p in export_set(picked, "face", sizes=[64])] == ["f02.png"]
    backup = target.with_name("f02.png.bak")
    assert read_image(backup, 3).max() == 0  # the edit is kept
    assert read_image(target, 3).max() > 0


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
    written = export_set(c, "body-sf", sizes=[64])
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["LoRAInput/2_krnksf_krnk/krnksf girl_b0064/b03.png"]
    assert read_image(written[0], 3).shape == (64, 32, 3)  # the longer side is the size
