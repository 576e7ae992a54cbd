"""Test-wide settings: no model hub, deterministic CPU threads."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """charframe's user cache (the sd-scripts tokenizer copy) goes to a temporary folder, never ~/.cache."""
    monkeypatch.setenv("CHARFRAME_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "charframe-cache"))


@pytest.fixture(autouse=True)
def _notes_said_again() -> None:
    """Notes said once per process (charframe.util.once) are said again in each test."""
    from charframe.util.once import forget

    forget()


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of this test only (imgutils and charframe both read HF_HUB_CACHE's value), where a
    test lays out tiny model files as `huggingface-cli download` would."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert constants.HF_HUB_OFFLINE  # set above: no request can be made
    return cache
