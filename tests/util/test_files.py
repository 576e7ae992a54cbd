from pathlib import Path

import pytest

from charframe.util.files import atomic_path, atomic_write_text, backup_file, free_output_path


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_uses_normal_file_mode(tmp_path: Path) -> None:
    import os
    import stat

    p = tmp_path / "m.txt"
    atomic_write_text(p, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask


def test_atomic_path_keeps_original_on_crash(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("original")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash")
    assert p.read_text() == "original"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_backups_never_overwrite_each_other(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("v1")
    b1 = backup_file(p)
    p.write_text("v2")
    b2 = backup_file(p)
    assert (b1.name, b2.name) == ("c.txt.bak", "c.txt.bak1")
    assert (b1.read_text(), b2.read_text()) == ("v1", "v2")


def test_free_output_path(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    assert free_output_path(p) == p
    p.write_bytes(b"")
    assert free_output_path(p).name == "x-1.safetensors"
