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


def test_looking_for_a_model_does_not_import_rembg(tmp_path: Path) -> None:
    """`method = auto` without a model file ends in flood without importing rembg (whose pymatting compiles with
    numba on first use: minutes, for nothing)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from charframe.cleaning.clean import make_alpha_fn; used, _, _ = make_alpha_fn('auto', None); "
            "print(used, [m for m in ('rembg', 'pymatting', 'numba', 'onnxruntime') if m in sys.modules])")
    env = {**os.environ, "U2NET_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["flood", "[]"]


@pytest.mark.parametrize("where", ["u2net_home", "rembg_home", "xdg", "xdg_legacy"])
def test_model_lookup_matches_rembgs_own(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rembg.sessions.u2net import U2netSession

    from charframe.cleaning.rembg_method import find_model_file

    for var in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    place = {"u2net_home": ("U2NET_HOME", tmp_path / "u", tmp_path / "u" / "u2net.onnx"),
             "rembg_home": ("REMBG_HOME", tmp_path / "r", tmp_path / "r" / "models" / "u2net" / "u2net.onnx"),
             "xdg": ("XDG_DATA_HOME", tmp_path / "x", tmp_path / "x" / "rembg" / "models" / "u2net" / "u2net.onnx"),
             "xdg_legacy": ("XDG_DATA_HOME", tmp_path / "x", tmp_path / "x" / ".u2net" / "u2net.onnx")}[where]
    var, value, file = place
    monkeypatch.setenv(var, str(value))
    assert find_model_file("u2net") is None and U2netSession.resolve_existing("u2net.onnx") is None
    file.parent.mkdir(parents=True)
    file.write_bytes(b"onnx")
    assert find_model_file("u2net") == file == Path(U2netSession.resolve_existing("u2net.onnx"))


def test_first_rembg_use_says_it_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import sys

    import rembg  # noqa: F401  (already compiled in this environment: the re-import below is quick)

    from charframe.cleaning import rembg_method

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert not rembg_method.numba_cache_present()
    (tmp_path / "alpha_1234").mkdir()
    (tmp_path / "alpha_1234" / "estimate.py311.nbi").write_bytes(b"")
    assert rembg_method.numba_cache_present()
    monkeypatch.setattr(rembg_method, "numba_cache_present", lambda: False)
    monkeypatch.delitem(sys.modules, "rembg")
    caplog.set_level("WARNING", logger="charframe")
    rembg_method._import_rembg()
    assert "first use of rembg here" in caplog.text and "compiles with numba once" in caplog.text
