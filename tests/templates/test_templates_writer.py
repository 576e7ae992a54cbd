"""The committed FaceTemplate/ and BodyTemplate/, regeneration, and the `charframe templates` command."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.cli import main
from charframe.cli.templates import parse_azimuths, parse_maps
from charframe.errors import CharframeError
from charframe.templates.writer import ALL_MAPS, generate_templates, render_code
from charframe.templates.writer import output_path

ROOT = Path(__file__).resolve().parents[2]
SETS = {"f": ROOT / "FaceTemplate", "b": ROOT / "BodyTemplate"}
SIZES = {"f": (1024, 1024), "b": (512, 1024)}
MODES = {"clay": "L", "depth": "L", "softedge": "L", "canny": "L", "mask": "L", "normal": "RGB", "openpose": "RGB"}
# Representative subset for the reproduction check (benchmarks/templates.py --check does all):
# front, from above in profile, back 45° (body), from below behind.
SUBSET = ["f00", "f12", "b03", "b24"]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_committed_sets_are_complete():
    for kind, folder in SETS.items():
        for e in range(3):
            for d in range(8):
                from charframe.dataset.naming import ImageCode

                code = ImageCode(kind, e, d)
                for image, mode in MODES.items():
                    path = output_path(folder, code, image)
                    if d > 4:  # the default set is azimuth 0-4; 5-7 are generated on request
                        assert not path.exists(), path
                        continue
                    with Image.open(path) as img:
                        assert img.mode == mode and img.size == SIZES[kind], path
        with Image.open(folder / "overview.png") as sheet:
            assert sheet.mode == "RGB" and sheet.size[0] >= 1000


@pytest.fixture(scope="module")
def regenerated():
    return {code: render_code(code) for code in SUBSET}  # default size and settings


@pytest.mark.parametrize("code", SUBSET)
def test_regeneration_reproduces_committed_files(regenerated, code):
    from charframe.dataset.naming import require_code

    for image, new in regenerated[code].items():
        old = _load(output_path(SETS[code[0]], require_code(code), image))
        assert old.shape == new.shape, (code, image)
        diff = np.abs(old.astype(int) - new.astype(int))
        assert diff.mean() < 0.5 and (diff > 16).mean() < 0.002, (code, image, diff.mean())


def test_overview_shows_every_code_with_a_label():
    sheet = _load(SETS["f"] / "overview.png")
    paper = np.array([246, 246, 244])
    # 3 rows × 5 columns of dark thumbnails; label text under each
    dark = (sheet.astype(int).sum(axis=2) < 200).any(axis=1)
    runs = np.diff(np.concatenate([[0], dark.astype(int), [0]]))
    assert (runs == 1).sum() >= 3
    assert (sheet.reshape(-1, 3) == paper).all(axis=1).mean() > 0.2


def test_generate_small_set_with_mirrors(tmp_path):
    paths = generate_templates(tmp_path, size=96, azimuths=range(8), maps=("softedge", "openpose"),
                               sets=("f",), elevations=(1,), workers=1)
    face = tmp_path / "FaceTemplate"
    assert sorted(p.name for p in face.glob("f1?.png")) == [f"f1{d}.png" for d in range(8)]
    assert (face / "control" / "openpose" / "f17.png").exists() and (face / "overview.png").exists()
    assert not (tmp_path / "BodyTemplate").exists()
    assert len(paths) == 8 * 3 + 1 and all(p.exists() for p in paths)
    # mirrors: 5-7 are 3-1 flipped
    assert np.array_equal(_load(face / "f15.png"), _load(face / "f13.png")[:, ::-1])
    assert np.array_equal(_load(face / "control/softedge/f17.png"), _load(face / "control/softedge/f11.png")[:, ::-1])

    # a rerun rewrites nothing, and never touches the user's own files
    mine = face / "f12-longhair.png"
    mine.write_bytes(b"user file")
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    os.utime(face / "f10.png", ns=(1, 1))
    generate_templates(tmp_path, size=96, azimuths=range(8), maps=("softedge", "openpose"),
                       sets=("f",), elevations=(1,), workers=1)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in paths if p.name != "f10.png")
    assert (face / "f10.png").stat().st_mtime_ns == 1  # same pixels: left alone
    assert mine.read_bytes() == b"user file"


def test_generate_rejects_bad_settings(tmp_path):
    with pytest.raises(CharframeError, match="unknown control map"):
        generate_templates(tmp_path, maps=("hed",))
    with pytest.raises(CharframeError, match="azimuth"):
        generate_templates(tmp_path, azimuths=[8])
    with pytest.raises(CharframeError, match="elevation_deg must be between 0 and 90"):
        generate_templates(tmp_path, elevation_deg=90)


def test_cli_parsing():
    assert parse_azimuths("0-4") == [0, 1, 2, 3, 4]
    assert parse_azimuths("0-7") == list(range(8))
    assert parse_azimuths("0,2,5-6") == [0, 2, 5, 6]
    assert parse_maps(["all"]) == ALL_MAPS and parse_maps(["none"]) == ()
    assert parse_maps(["depth,normal", "mask"]) == ("depth", "normal", "mask")
    with pytest.raises(CharframeError):
        parse_maps(["hed"])


def test_cli_writes_out_dir_and_default_is_project(tmp_path, monkeypatch, capsys):
    assert main(["templates", "--out", str(tmp_path), "--size", "64", "--azimuths", "0,4",
                 "--elevation-deg", "20", "--maps", "mask"]) == 0
    assert (tmp_path / "BodyTemplate" / "control" / "mask" / "b24.png").exists()
    assert _load(tmp_path / "BodyTemplate" / "b00.png").shape == (64, 32)
    # without --out: the project's folders (the one holding LoRAInput/)
    project = tmp_path / "proj"
    (project / "LoRAInput").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert main(["templates", "--size", "64", "--azimuths", "0", "--maps", "none"]) == 0
    assert (project / "FaceTemplate" / "f20.png").exists() and (project / "BodyTemplate" / "overview.png").exists()
    assert main(["templates", "--maps", "hed"]) == 2
    assert "unknown map" in capsys.readouterr().err


# --- hostile input (issue 12, points 10 and 11) -------------------------------------------------------------

@pytest.mark.parametrize(
    "extra, message",
    [
        (["--size", "100000"], "error: --size must be an even number of pixels from 64 to 4096, got 100000"),
        (["--size", "63"], "error: --size must be an even number of pixels from 64 to 4096, got 63"),
        (["--elevation-deg", "nan"], "error: --elevation-deg must be between 0 and 90, got nan"),
        (["--elevation-deg", "inf"], "error: --elevation-deg must be between 0 and 90, got inf"),
    ],
)
def test_cli_templates_bad_numbers(tmp_path, capsys, extra, message):
    assert main(["templates", "--out", str(tmp_path), *extra]) == 2
    assert capsys.readouterr().err.strip() == message
    assert list(tmp_path.iterdir()) == []


def test_cli_templates_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["templates", "--out", str(target), "--size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {target}: is a file, but --out must be a folder (it receives FaceTemplate/ and BodyTemplate/)"
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "FaceTemplate").write_text("a file")
    assert main(["templates", "--out", str(tmp_path), "--size", "64"]) == 2
    assert "FaceTemplate: is a file, but the template set needs this name for a folder" in capsys.readouterr().err
