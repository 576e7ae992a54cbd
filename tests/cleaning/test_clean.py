"""clean_set: filled RGB + RGBA copies, fill colour from the hair, reruns skip, a corrupt candidate loses nothing."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from charframe.character import load_character
from charframe.cleaning import clean as clean_module
from charframe.cleaning.clean import choose_fill, clean_set, hair_lightness
from charframe.cleaning.flood import ALGORITHM_VERSION, FloodSettings
from charframe.cleaning.images import read_image
from charframe.errors import CharframeError
from charframe.testing.figures import compose_figure, figure_mask, make_project


@pytest.mark.parametrize("hair,expected", [((25, 20, 30), "black"), ((245, 225, 150), "white")])
def test_auto_fill_follows_the_hair(hair, expected) -> None:
    cover = figure_mask((96, 96))
    rgb = compose_figure(cover, hair=hair, body=(120, 120, 200))  # same body colour: only the hair differs
    assert (hair_lightness(rgb, cover) < 50) == (expected == "black")
    assert choose_fill("auto", rgb, cover) == expected
    assert choose_fill("white", rgb, cover) == "white"


def test_clean_set_writes_filled_and_transparent_copies(tmp_path: Path) -> None:
    c = load_character(make_project(tmp_path, ("f00",), candidates=2))
    written = clean_set(c, "face", method="flood", progress=False)
    work = c.work_dir("face")
    assert sorted(p.relative_to(work).as_posix() for p in written) == [
        "alpha/f00-0.png", "alpha/f00-1.png", "clean/f00-0.png", "clean/f00-1.png"]
    raw = read_image(work / "raw/f00-1.png", 3)
    filled = read_image(work / "clean/f00-1.png", 3)
    rgba = read_image(work / "alpha/f00-1.png", 4)
    truth = figure_mask((96, 96))
    assert tuple(filled[0, 0]) == (0, 0, 0)  # dark hair → black background
    assert rgba[0, 0, 3] == 0 and rgba[48, 48, 3] == 255
    inside = cv2.erode((truth > 0.999).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)  # off the edge band
    assert np.abs(filled[inside].astype(int) - raw[inside]).max() <= 3  # the figure is untouched
    sil = rgba[..., 3] > 127
    assert (sil & (truth > 0.5)).sum() / (sil | (truth > 0.5)).sum() >= 0.99
    # rerun: nothing to do; a changed candidate is redone alone
    assert clean_set(c, "face", method="flood", progress=False) == []
    (work / "raw/f00-0.png").write_bytes((work / "raw/f00-1.png").read_bytes())
    assert [p.name for p in clean_set(c, "face", method="flood", progress=False)] == ["f00-0.png", "f00-0.png"]


def test_a_new_flood_rule_redoes_cleaned_files(tmp_path: Path, monkeypatch) -> None:
    """The manifest records the flood settings with the rule's version: files cleaned by an older rule are
    stale, the others are not."""
    c = load_character(make_project(tmp_path, ("f00",), candidates=2))
    assert len(clean_set(c, "face", method="flood", progress=False)) == 4
    assert clean_set(c, "face", method="flood", progress=False) == []
    newer = functools.partial(FloodSettings, version=ALGORITHM_VERSION + 1)
    monkeypatch.setattr(clean_module, "FloodSettings", newer)
    assert len(clean_set(c, "face", method="flood", progress=False)) == 4
    assert clean_set(c, "face", method="flood", progress=False) == []


def test_corrupt_candidate_is_one_error_and_the_rest_is_cleaned(tmp_path: Path) -> None:
    c = load_character(make_project(tmp_path, ("f00",), candidates=2, fill="white"))
    raw = c.work_dir("face") / "raw"
    (raw / "f00-0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(CharframeError, match=r"f00-0.png: not a readable 8-bit image.*\n1 other image"):
        clean_set(c, "face", method="flood", progress=False)
    filled = read_image(c.work_dir("face") / "clean/f00-1.png", 3)
    assert tuple(filled[0, 0]) == (255, 255, 255)
    assert not (c.work_dir("face") / "clean/f00-0.png").exists()


def test_no_candidates_and_bad_method(tmp_path: Path) -> None:
    c = load_character(make_project(tmp_path, (), candidates=0))
    with pytest.raises(CharframeError, match="no candidates"):
        clean_set(c, "face", method="flood", progress=False)
    c = load_character(make_project(tmp_path, ("f00",), candidates=1))
    with pytest.raises(CharframeError, match="unknown method"):
        clean_set(c, "face", method="magic", progress=False)  # type: ignore[arg-type]
