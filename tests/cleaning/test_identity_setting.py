"""Which identity model a project uses (issue 22), and the one line when dghs-imgutils is missing: these run
without dghs-imgutils installed (the scoring tests in test_identity_pick.py need it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from charframe.cleaning.identity import identity_setting, scorer_for
from charframe.errors import CharframeError
from charframe.models import ccip
from charframe.testing import tiny_ccip


@pytest.fixture()
def no_imgutils(monkeypatch: pytest.MonkeyPatch) -> None:
    """imgutils made unimportable for this test (None in sys.modules makes `import` raise ImportError)."""
    for name in [n for n in sys.modules if n == "imgutils" or n.startswith("imgutils.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("imgutils", "imgutils.metrics", "imgutils.metrics.ccip", "imgutils.data", "imgutils.utils"):
        monkeypatch.setitem(sys.modules, name, None)


def _project(root: Path, model: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = f'[identity]\nmodel = "{model}"\n' if model is not None else ""
    (root / "charframe.toml").write_text(text, encoding="utf-8")
    return root


def test_none_and_auto_without_files_score_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for model, label in ((None, "auto: no model"), ("auto", "auto: no model"), ("none", "none"), ("NONE", "none")):
        root = _project(tmp_path / f"p-{label[:4]}-{model}", model)
        setting = identity_setting(root)
        assert (setting.model, setting.label) == (None, label)
        assert scorer_for(root) is None


def test_a_named_model_folder_is_used_with_its_threshold(tmp_path: Path) -> None:
    tiny_ccip.write_folder(tmp_path / "p" / "models" / "ccip", "random", threshold=0.2)
    setting = identity_setting(_project(tmp_path / "p", "models/ccip"))
    assert setting.model is not None and setting.model.threshold == 0.2
    assert setting.model.feature.resolve() == (tmp_path / "p" / "models" / "ccip" / "model_feat.onnx").resolve()


def test_a_model_without_imgutils_is_one_line(tmp_path: Path, no_imgutils: None) -> None:
    tiny_ccip.write_folder(tmp_path / "p" / "models" / "ccip", "random")
    root = _project(tmp_path / "p", "models/ccip")
    with pytest.raises(CharframeError, match=r"^identity scoring needs the dghs-imgutils package \(imgutils\), which "
                                             r"is not installed \(.*\); install it: pip install 'charframe\[identity\]' "
                                             r"&& pip install --no-deps dghs-imgutils==0.19.0") as e:
        scorer_for(root)
    assert "\n" not in str(e.value)
    assert not ccip.available("some-model-nowhere", root)
