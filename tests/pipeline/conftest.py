"""The pipeline tests' shared project: built once per session by the real steps (see project_builder)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from project_builder import make_project  # noqa: E402


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory):
    """(project root, the report of its first full run): face → body → group for two characters."""
    import torch

    from charframe.pipeline.runner import Options, run_target

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = make_project(tmp_path_factory.mktemp("built") / "proj")
        _, report = run_target(root / "Characters" / "pair.group.toml", Options(progress=False))
    finally:
        torch.set_num_threads(threads)
    return root, report
