from pathlib import Path

import pytest

from charframe.errors import CharframeError

from charframe.util.files import atomic_path, atomic_write_text, backup_file, clean_stale_temps, free_output_path, is_temp_name


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


def test_temporary_name_is_short_and_in_the_target_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 248-character name still gets written: the temporary name never needs more than 16 characters."""
    long_name = "x" * 244 + ".txt"
    seen = []
    with atomic_path(tmp_path / long_name) as tmp:
        seen.append(tmp)
        tmp.write_text("ok")
    assert (tmp_path / long_name).read_text() == "ok"
    assert seen[0].parent == tmp_path and len(seen[0].name) == 16 and is_temp_name(seen[0].name)


def test_missing_parent_is_an_error_unless_asked_to_create(tmp_path: Path) -> None:
    from charframe.errors import CharframeError

    with pytest.raises(CharframeError, match=r"nope: no such folder"):
        atomic_write_text(tmp_path / "nope" / "a.txt", "x", parents=False)
    assert not (tmp_path / "nope").exists()
    atomic_write_text(tmp_path / "made" / "a.txt", "x", parents=True)
    assert (tmp_path / "made" / "a.txt").read_text() == "x"
    (tmp_path / "file").write_text("f")
    with pytest.raises(CharframeError, match=r"file: is a file, but it must be the folder of a.txt"):
        atomic_write_text(tmp_path / "file" / "a.txt", "x")
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(CharframeError, match=r"dir.txt: is a folder"):
        atomic_write_text(tmp_path / "dir.txt", "x")


def test_stale_temporaries_of_a_killed_write_are_cleaned(tmp_path: Path) -> None:
    import os
    import time

    from charframe.util import files

    old = tmp_path / ".cf-0123abcd.tmp"
    fresh = tmp_path / ".cf-89abcdef.tmp"  # a write in progress elsewhere: kept
    foreign = tmp_path / ".other-0123abcd.tmp"  # not our pattern: kept
    for p in (old, fresh, foreign):
        p.write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(foreign, (hours_ago, hours_ago))
    files._cleaned.discard(str(tmp_path))
    atomic_write_text(tmp_path / "a.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name, "a.txt"])
    assert clean_stale_temps(tmp_path, older_than_minutes=0) == [fresh]


def test_atomic_write_returns_the_stat_of_the_new_file(tmp_path: Path) -> None:
    st = atomic_write_text(tmp_path / "s.txt", "hello", fsync=False)
    assert (st.st_size, st.st_mtime_ns) == ((tmp_path / "s.txt").stat().st_size, (tmp_path / "s.txt").stat().st_mtime_ns)


def test_check_parent_is_safe_when_parallel_writers_create_the_folder(tmp_path: Path) -> None:
    """Two writers making the same missing folder at once: neither may call the new folder a file."""
    from concurrent.futures import ThreadPoolExecutor

    from charframe.util.files import check_parent

    for round_ in range(20):
        folder = tmp_path / f"r{round_}" / "clean"
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: check_parent(folder / f"f{i}.png", parents=True), range(8)))
        assert folder.is_dir() and len(results) == 8
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CharframeError, match="is a file, but it must be the folder of a.png"):
        check_parent(tmp_path / "afile" / "a.png", parents=True)
    with pytest.raises(CharframeError, match="no such folder"):
        check_parent(tmp_path / "missing" / "a.png")
