"""pick: automatic by silhouette IoU with the template mask (ties by edge agreement), by hand, mirrored 5-7."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from charframe.character import load_character
from charframe.cleaning.clean import clean_set
from charframe.cleaning.images import read_image
from charframe.cleaning.pick import (Score, best, draw_picked_sheet, parse_manual, pick_set, read_picks, read_selection,
                                    score_candidate, template_map)
from charframe.dataset.sheets import HAND, PICK
from charframe.errors import CharframeError
from charframe.testing.figures import figure_mask, make_project, write_template_mask


@pytest.fixture()
def cleaned(tmp_path: Path):
    c = load_character(make_project(tmp_path, ("f00", "f02"), candidates=3))
    clean_set(c, "face", method="flood", progress=False)
    return c


def test_auto_pick_takes_the_matching_pose(cleaned, caplog) -> None:
    caplog.set_level("INFO", logger="charframe")
    picks = pick_set(cleaned, "face")
    assert picks == {"f00": 1, "f02": 1}  # candidate 1 is the template's pose in make_project
    work = cleaned.work_dir("face")
    text = (work / "picks.toml").read_text(encoding="utf-8")
    assert text.split("[pinned]\n")[1] == "\n[auto]\nf00 = 1\nf02 = 1\n"
    layout = draw_picked_sheet(cleaned, "face")
    sheet = read_image(work / "contact-picked.png", 3)
    assert sheet.shape == (layout.image.size[1], layout.image.size[0], 3)
    x0, y0, _, _ = layout.outlines["f02"]
    assert (x0, y0) == (layout.tiles[("f02", 2)][0] - 3, layout.tiles[("f02", 2)][1] - 3)  # tile 2 = candidate #1
    assert tuple(sheet[y0 + 1, x0 + 1]) == PICK  # f02's candidate 1 is outlined in green
    assert "best IoU" in layout.texts and "IoU 0.9" in " ".join(layout.texts)
    table = caplog.text
    assert "f00      1  0.9" in table and "auto" in table


def test_hand_picks_override_and_are_checked(cleaned) -> None:
    assert pick_set(cleaned, "face", manual=["f02:2"]) == {"f00": 1, "f02": 2}
    sel = cleaned.root / "sel.toml"
    sel.write_text("f00 = 0\nf02 = 0\n", encoding="utf-8")
    assert pick_set(cleaned, "face", manual=[str(sel)]) == {"f00": 0, "f02": 0}
    with pytest.raises(CharframeError, match="no candidates of f13"):
        pick_set(cleaned, "face", manual=["f13:0"])
    with pytest.raises(CharframeError, match="f00 has candidates 0, 1, 2, not 7"):
        pick_set(cleaned, "face", manual=["f00:7"])
    with pytest.raises(CharframeError, match="CODE:CANDIDATE"):
        parse_manual(["f00=1"])
    sel.write_text("f00 = 'one'\n", encoding="utf-8")
    with pytest.raises(CharframeError, match="sel.toml: f00 = 'one'"):
        parse_manual([str(sel)])


def test_template_without_mask_is_an_error(cleaned) -> None:
    (cleaned.root / "FaceTemplate/control/mask/f02.png").unlink()
    with pytest.raises(CharframeError, match=r"mask/f02.png: the template has no mask map"):
        pick_set(cleaned, "face")
    assert not (cleaned.work_dir("face") / "picks.toml").exists()


def test_mirrored_templates_and_tie_break(tmp_path: Path) -> None:
    cover = figure_mask((64, 64), shift=(0.15, 0.0))
    write_template_mask(tmp_path, "f13", cover)
    c = load_character(make_project(tmp_path, (), candidates=0, character_extra="asymmetric = true\n"))
    mask = template_map(c, "f15", "mask")  # f15 mirrors f13
    assert np.array_equal(mask, read_image(tmp_path / "FaceTemplate/control/mask/f13.png", 1)[:, ::-1])
    # a candidate whose silhouette is the mirrored one scores IoU 1 against f15
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = mask
    iou, edge = score_candidate(rgba, mask, template_map(c, "f15", "softedge"))
    assert iou == 1.0
    # equal IoUs (within the tie margin): the better edge agreement wins
    assert best([Score("f00", 0, 0.95, 0.2), Score("f00", 1, 0.948, 0.6), Score("f00", 2, 0.90, 0.9)]) == {"f00": 1}


def test_hand_edited_picks_are_pinned_and_the_file_backed_up(cleaned) -> None:
    """Issue 19: a number edited in picks.toml pins that code for every later pick; unpinning releases it."""
    work = cleaned.work_dir("face")
    pick_set(cleaned, "face")
    pick_set(cleaned, "face")
    assert not (work / "picks.toml.bak").exists()  # charframe's own file: replaced silently
    text = (work / "picks.toml").read_text(encoding="utf-8")
    edited = text.replace("[auto]\nf00 = 1", "[auto]\nf00 = 2")
    (work / "picks.toml").write_text(edited, encoding="utf-8")
    assert pick_set(cleaned, "face") == {"f00": 2, "f02": 1}
    assert (work / "picks.toml.bak").read_text(encoding="utf-8") == edited
    assert read_selection(work / "picks.toml") == {"f00": 2, "f02": 1}
    assert "[pinned]\nf00 = 2\n" in (work / "picks.toml").read_text(encoding="utf-8")
    assert pick_set(cleaned, "face") == {"f00": 2, "f02": 1}  # still pinned on the next pick
    assert pick_set(cleaned, "face", manual=["f02:0"]) == {"f00": 2, "f02": 0}  # a CLI pick pins too
    assert pick_set(cleaned, "face", unpin=["f00"]) == {"f00": 1, "f02": 0}
    assert pick_set(cleaned, "face", unpin=["all"]) == {"f00": 1, "f02": 1}


def test_a_flat_picks_file_written_by_hand_is_pinned_whole(cleaned) -> None:
    work = cleaned.work_dir("face")
    work.joinpath("picks.toml").write_text("f00 = 2\nf02 = 0\n", encoding="utf-8")
    assert pick_set(cleaned, "face") == {"f00": 2, "f02": 0}
    assert (work / "picks.toml.bak").read_text(encoding="utf-8") == "f00 = 2\nf02 = 0\n"


def test_picked_sheet_is_redrawn_after_a_hand_edit(cleaned) -> None:
    work = cleaned.work_dir("face")
    pick_set(cleaned, "face")
    before = (work / "contact-picked.png").read_bytes()
    text = (work / "picks.toml").read_text(encoding="utf-8")
    (work / "picks.toml").write_text(text.replace("[auto]\nf00 = 1\nf02 = 1", "[auto]\nf00 = 1\nf02 = 0"),
                                     encoding="utf-8")  # a hand edit: f02 → candidate 0
    layout = draw_picked_sheet(cleaned, "face")
    assert read_picks(cleaned, "face") == {"f00": 1, "f02": 0}
    assert (work / "contact-picked.png").read_bytes() != before
    sheet = read_image(work / "contact-picked.png", 3)
    x0, y0, _, _ = layout.outlines["f02"]
    assert x0 == layout.tiles[("f02", 1)][0] - 3  # tile 1 = candidate #0
    assert tuple(sheet[y0 + 1, x0 + 1]) == HAND and tuple(sheet[layout.outlines["f00"][1] + 1, layout.outlines["f00"][0] + 1]) == PICK
    assert "picked by hand" in layout.texts and "the scores' pick" in layout.texts
    assert "krnk face: picks for 2 of 2 codes (1 by hand)" in layout.texts
