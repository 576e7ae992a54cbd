"""`charframe generate`: thin over generate_set; errors are one line and exit 2; --help teaches."""

from __future__ import annotations

from pathlib import Path

import pytest

from charframe.cli import main
from generation_helpers import make_project


def test_generate_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "krnk", "--codes", "f12", "--candidates", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "krnk face: 1 new, 0 kept" in out
    assert (tmp_path / "LoRAWork" / "krnk" / "face" / "raw" / "f12-0.png").is_file()
    assert main(["generate", str(tmp_path), "--set", "body", "--codes", "b02", "--candidates", "1", "--device", "cpu"]) == 0
    assert "krnk body-sf: 1 new" in capsys.readouterr().out
    assert (tmp_path / "LoRAWork" / "krnk" / "body-sf" / "raw" / "b02-0.png").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--codes", "b12"], "'b12' in --codes is not a face-set code"),
    (["--control", "sketch"], "unknown control map 'sketch' in --control"),
    (["--candidates", "0"], "--candidates must be at least 1"),
])
def test_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture, argv, message) -> None:
    ch = make_project(tmp_path)
    assert main(["generate", str(ch.path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_character_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ch = make_project(tmp_path)
    ch.path.write_text(ch.path.read_text().replace("steps = 2", "steps = -3"))
    assert main(["generate", str(ch.path)]) == 2
    assert "krnk.toml:" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--face-lora" in out and "charframe generate krnk --control hed" in out
