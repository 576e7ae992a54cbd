"""Unexpected exceptions: one line naming the type and a log file; the traceback goes to the log (issue 12)."""

from pathlib import Path

import pytest

from charframe.cli import main, naming


def _boom(args: object) -> int:
    raise ValueError("boom: something nobody foresaw\nsecond line")


def test_unexpected_error_is_one_line_and_a_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("CHARFRAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(naming, "cmd_tag", _boom)
    assert main(["tag", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    logs = list((tmp_path / "cache" / "logs").glob("charframe-*.log"))
    assert len(logs) == 1
    assert lines == [f"error: unexpected ValueError: boom: something nobody foresaw (details in {logs[0]})"]
    assert "Traceback" not in err
    text = logs[0].read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "second line" in text and f"tag {tmp_path}" in text


def test_verbose_prints_the_traceback_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("CHARFRAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(naming, "cmd_tag", _boom)
    assert main(["-v", "tag", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error: unexpected ValueError" in err and "Traceback (most recent call last)" in err


def test_unwritable_cache_falls_back_to_the_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHARFRAME_CACHE_DIR", str(blocker))
    monkeypatch.setattr(naming, "cmd_tag", _boom)
    assert main(["tag", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "details in " in err and "charframe-logs" in err


def test_system_refusing_a_path_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    too_long = tmp_path / ("L" * 300)
    assert main(["tag", str(too_long)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {too_long}: File name too long"
