"""The real rembg code path (its session classes, normalisation, predict, remove) on a tiny ONNX model built
here; local lookup only (a download attempt fails the test); missing files named with their folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from charframe.character import load_character
from charframe.cleaning.clean import clean_set
from charframe.cleaning.images import read_image
from charframe.cleaning.rembg_method import open_session, rembg_alpha, resolve_model
from charframe.errors import CharframeError
from charframe.testing.figures import compose_figure, figure_mask, make_project
from charframe.testing.tiny_onnx import build_tiny_u2net


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_u2net(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import pooch

    def refuse(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("rembg tried to download a model")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    home = tmp_path / "u2net-home"
    home.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(home))
    return home


def test_custom_onnx_by_path_through_rembg(tiny_onnx: Path) -> None:
    model = resolve_model(str(tiny_onnx))  # a file anywhere (rembg itself only takes its own folders)
    assert model.name == "u2net_custom"
    cover = figure_mask((128, 128))
    alpha = rembg_alpha(open_session(model, threads=1), compose_figure(cover))
    sil, truth = alpha > 0.5, cover > 0.5
    assert (sil & truth).sum() / (sil | truth).sum() >= 0.95  # 320-px model resolution, LANCZOS back up


def test_named_model_from_the_model_folder(tiny_onnx: Path, no_download: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO", logger="charframe")
    with pytest.raises(CharframeError, match="model u2net: the model file u2net.onnx is not here: put it in "
                       + re.escape(str(no_download))):
        resolve_model("u2net")
    with pytest.raises(CharframeError, match="isnet-anime.onnx is not here"):
        resolve_model(None)  # the default model
    (no_download / "u2net.onnx").write_bytes(tiny_onnx.read_bytes())
    c = load_character(make_project(tmp_path, ("f00",), candidates=1))
    clean_set(c, "face", method="auto", model="u2net", progress=False)  # auto → rembg: its model is here
    rgba = read_image(c.work_dir("face") / "alpha/f00-0.png", 4)
    assert "method auto → rembg" in caplog.text
    assert rgba[0, 0, 3] == 0 and rgba[48, 48, 3] >= 250
    assert clean_set(c, "face", method="rembg", model="u2net", progress=False) == []  # same settings: up to date
    assert len(clean_set(c, "face", method="flood", progress=False)) == 2  # other method: redone


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(CharframeError, match="unknown rembg model"):
        resolve_model("nonsense")
    with pytest.raises(CharframeError, match="no such ONNX model file"):
        resolve_model(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(CharframeError, match="bad.onnx: not a usable ONNX model"):
        open_session(resolve_model(str(bad)))
    np.testing.assert_equal(bad.read_bytes(), b"not onnx at all")
