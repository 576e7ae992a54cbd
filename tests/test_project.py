from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.project import find_project_root, load_project_config, project_dirs


def test_root_found_from_dataset_folder_by_lorainput(tmp_path: Path) -> None:
    ds = tmp_path / "proj" / "LoRAInput" / "4_krnk" / "krnk girl_f0512"
    ds.mkdir(parents=True)
    assert find_project_root(ds) == tmp_path / "proj"
    assert find_project_root(ds / "missing.png") == tmp_path / "proj"


def test_root_found_by_charframe_toml_nearest_wins(tmp_path: Path) -> None:
    (tmp_path / "LoRAInput").mkdir()
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (tmp_path / "a" / "charframe.toml").write_text('[paths]\noutput = "out"\n')
    assert find_project_root(inner) == tmp_path / "a"
    assert load_project_config(tmp_path / "a") == {"paths": {"output": "out"}}
    dirs = project_dirs(tmp_path / "a")
    assert dirs.output == tmp_path / "a" / "out"
    assert dirs.input == tmp_path / "a" / "LoRAInput"
    assert dirs.face_templates.name == "FaceTemplate"


def test_no_project_falls_back_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lonely = tmp_path / "x"
    lonely.mkdir()
    monkeypatch.chdir(lonely)
    assert find_project_root(lonely) == lonely
    assert load_project_config(lonely) == {}


def test_bad_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "charframe.toml").write_text("[paths\n")
    with pytest.raises(CharframeError, match="charframe.toml"):
        load_project_config(tmp_path)
    (tmp_path / "charframe.toml").write_text('[paths]\noutptu = "x"\n')
    with pytest.raises(CharframeError, match="outptu"):
        project_dirs(tmp_path)
