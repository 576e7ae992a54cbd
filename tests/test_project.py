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


# --- charframe.toml validated as a whole (issue 12, point 4) ---------------------------------------------

from dataset_fixtures import krnk_tree  # noqa: E402

from charframe.cli import main  # noqa: E402
from charframe.project import CaptionEdits, load_project  # noqa: E402


def _tag(capsys: pytest.CaptureFixture, ds: Path) -> tuple[int, str]:
    rc = main(["tag", str(ds)])
    return rc, capsys.readouterr().err


def _captions(ds: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in ds.rglob("*.txt")}


@pytest.mark.parametrize(
    "body, message",
    [
        ('[captions]\nreplace = "no"\n', r"charframe.toml:2: captions.replace: expected true or false, got 'no'"),
        ('[captionz]\nremove = ["background"]\n', r"charframe.toml:1: captionz: unknown key \(did you mean 'captions'\?\)"),
        ('[captions]\nremve = ["background"]\n', r"charframe.toml:2: captions.remve: unknown key \(did you mean 'remove'\?\)"),
        ('[paths]\ninput = 3\n', r"charframe.toml:2: paths.input: expected a string, got 3"),
        ('[block_presets]\nX = [1, nan]\n', r"charframe.toml:2: block_presets.X\[1\]: expected a finite number, got nan"),
        ('[kohya]\ndir = ["a"]\n', r"charframe.toml:2: kohya.dir: expected a string"),
        ('[vram_profiles.small]\nLOW_LOW = 2\n', r"\[vram_profiles.small\] gives no batch size for LOW_MID"),
        ('[vram_profiles.x]\nLOW_LOW = true\nother = 1\n', r"charframe.toml:2: vram_profiles.x.LOW_LOW: expected an integer"),
    ],
)
def test_bad_project_file_is_one_message_and_no_caption_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture, body: str, message: str
) -> None:
    ds = krnk_tree(tmp_path)
    assert main(["tag", str(ds)]) == 0
    before = _captions(ds)
    (tmp_path / "charframe.toml").write_text(body, encoding="utf-8")
    capsys.readouterr()
    rc, err = _tag(capsys, ds)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert _captions(ds) == before


@pytest.mark.parametrize(
    "raw, message",
    [(b"\x00\x01\x02binary\xff", "a binary file, not a text charframe.toml"), (b"[paths]\ninput = '\xe9'\n", "not UTF-8 text")],
)
def test_binary_or_non_utf8_project_file(tmp_path: Path, capsys: pytest.CaptureFixture, raw: bytes, message: str) -> None:
    ds = krnk_tree(tmp_path)
    (tmp_path / "charframe.toml").write_bytes(raw)
    rc, err = _tag(capsys, ds)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert _captions(ds) == {}


def test_project_config_is_typed_and_cached(tmp_path: Path) -> None:
    f = tmp_path / "charframe.toml"
    f.write_text('[captions]\nremove = ["background"]\n[[captions.rule]]\nname = "x"\ntags = ["a"]\nazimuth = [1, 2]\n'
                 '[vram_profiles.mine]\nother = 3\n[kohya]\ndir = "sd"\n', encoding="utf-8")
    config = load_project(tmp_path)
    assert isinstance(config.captions, CaptionEdits) and config.captions.remove == ("background",)
    assert config.captions.rule[0].azimuth == (1, 2)
    assert config.vram_profiles["mine"].batch_sizes()["HIGH_HIGH"] == 3
    assert config.kohya.dir == "sd" and config.table("kohya") == {"dir": "sd"}
    assert load_project(tmp_path) is config  # read once while the file is unchanged
    assert load_project(tmp_path / "nowhere") == type(config)()
