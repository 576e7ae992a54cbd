"""Generation and the model family: an SDXL model (not yet generated with) is refused by name before it loads."""

from __future__ import annotations

from pathlib import Path

import pytest

import charframe.generation.generate as gen
from charframe.errors import CharframeError
from charframe.testing.tiny_files import save_tiny_sdxl_single_file
from generation_helpers import make_project


def test_generation_refuses_an_sdxl_model_before_loading_it(tmp_path: Path, monkeypatch) -> None:
    model = save_tiny_sdxl_single_file(tmp_path / "illustrious-tiny.safetensors")
    character = make_project(tmp_path / "p", extra=f'model = "{model}"')
    monkeypatch.setattr(gen, "load_sd", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(CharframeError, match=r"illustrious-tiny.safetensors: is an SDXL model; generating images with "
                                             r"SDXL models is not yet supported"):
        gen.generate_set(character, "face", codes=["f00"], progress=False)
    tiny = make_project(tmp_path / "tiny", extra='family = "sdxl"')
    with pytest.raises(CharframeError, match=r"krnk.toml: generation.model: is an SDXL model"):
        gen.generate_set(tiny, "face", codes=["f00"], progress=False)
