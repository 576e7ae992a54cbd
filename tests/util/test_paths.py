"""Containment (issue 19, point 5): the one validator for names from user strings, and the write guard."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.util.files import atomic_path, atomic_write_bytes, atomic_write_text, backup_file, confine_writes
from charframe.util.paths import check_inside, contained, name_problem, outside, relative_problem, safe_name


@pytest.mark.parametrize("value, problem", [
    ("krnk girl", None),
    ("girl, shorthair", None),
    ("クロ", None),
    ("", "is empty"),
    ("..", "is a relative folder step, not a name"),
    ("girl/../../../x", "holds '/' (a folder separator)"),
    ("a\\b", "holds '\\\\' (a folder separator)"),
    ("a:b", "holds ':'"),
    ("tab\there", "holds '\\t'"),
    ("girl.", "ends with a space or a dot (Windows drops them)"),
    ("NUL", "is a device name on Windows"),
    ("com1.txt", "is a device name on Windows"),
    ("bad\udcffname", "is not valid UTF-8 text"),
])
def test_name_problem(value: str, problem: str | None) -> None:
    assert name_problem(value) == problem


def test_safe_name_message_names_source_value_and_fix() -> None:
    assert safe_name("krnk", "x.toml:1: keyword") == "krnk"
    with pytest.raises(CharframeError) as e:
        safe_name("a/b", "x.toml:3: class", "use a plain word")
    assert str(e.value) == "x.toml:3: class: 'a/b' holds '/' (a folder separator); it becomes part of file and folder names: use a plain word"


@pytest.mark.parametrize("value, problem", [
    ("LoRAInput", None), ("data/in", None), ("./in", None), ("a/./b", None),
    ("../x", "climbs out with '..'"), ("a/../../b", "climbs out with '..'"), ("a\\..\\b", "climbs out with '..'"),
    ("/abs", "is an absolute path"), ("C:/x", "is an absolute path"), ("\\\\server\\share", "is an absolute path"),
    ("in|put", "is not a usable path ('in|put' holds '|')"),
])
def test_relative_problem(value: str, problem: str | None) -> None:
    assert relative_problem(value) == problem


def test_contained(tmp_path: Path) -> None:
    assert contained(tmp_path, "4_krnk", "krnk girl_f0512") == tmp_path / "4_krnk" / "krnk girl_f0512"
    with pytest.raises(CharframeError, match=r"^dataset: '\.\./x' climbs out with '\.\.'; give a path inside "):
        contained(tmp_path, "../x", what="dataset")


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1 for p in sorted(root.rglob("*"))}


def test_confined_writes_refuse_a_link_out_before_anything_is_written(tmp_path: Path) -> None:
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    (proj / "LoRAInput" / "4_krnk").mkdir(parents=True)
    elsewhere.mkdir()
    (proj / "LoRAInput" / "4_krnk" / "krnk girl_f0512").symlink_to(elsewhere, target_is_directory=True)
    before = _tree(elsewhere)
    link = proj / "LoRAInput" / "4_krnk" / "krnk girl_f0512"
    with confine_writes([proj]):
        atomic_write_text(proj / "LoRAInput" / "4_krnk" / "ok.txt", "inside")  # an ordinary write
        for write in (lambda p: atomic_write_bytes(p, b"x"), lambda p: atomic_write_text(p, "x", fsync=False)):
            with pytest.raises(CharframeError) as e:
                write(link / "f00.png")
            assert str(e.value) == (f"{link}: would be written at {elsewhere} (through the link {link}), outside the "
                                    f"project ({proj}); charframe writes only inside the project: replace the link with "
                                    "a real folder, or copy the files in")
        with pytest.raises(CharframeError, match="outside the project"):
            with atomic_path(link / "new" / "deeper" / "f.safetensors"):  # no folder is made through the link
                pass
        (elsewhere / "f01.png").write_bytes(b"old")
        with pytest.raises(CharframeError, match="outside the project"):
            backup_file(link / "f01.png")
        (elsewhere / "f01.png").unlink()
    assert _tree(elsewhere) == before
    atomic_write_bytes(link / "f00.png", b"x")  # outside the block, charframe's own writes are not confined
    assert (elsewhere / "f00.png").read_bytes() == b"x"


def test_a_standard_folder_that_is_a_link_is_a_root_of_its_own(tmp_path: Path) -> None:
    """A project whose LoRAInput/ lives on another drive (a link made on purpose) is written to; a link deeper
    down is not."""
    proj, big = tmp_path / "proj", tmp_path / "big"
    proj.mkdir()
    (big / "4_krnk").mkdir(parents=True)
    (proj / "LoRAInput").symlink_to(big, target_is_directory=True)
    assert outside(proj / "LoRAInput" / "4_krnk" / "x.png", [proj]) == big / "4_krnk" / "x.png"
    assert outside(proj / "LoRAInput" / "4_krnk" / "x.png", [proj, proj / "LoRAInput"]) is None
    check_inside(proj / "LoRAInput" / "4_krnk", [proj, proj / "LoRAInput"])
    with confine_writes([proj, proj / "LoRAInput"]):
        atomic_write_bytes(proj / "LoRAInput" / "4_krnk" / "x.png", b"png")
    assert (big / "4_krnk" / "x.png").read_bytes() == b"png"


def test_confinement_nests_and_is_restored(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with confine_writes([a]):
        with confine_writes([b]):
            atomic_write_bytes(b / "x", b"1")
            with pytest.raises(CharframeError):
                atomic_write_bytes(a / "x", b"1")
        atomic_write_bytes(a / "x", b"1")
        with pytest.raises(CharframeError):
            atomic_write_bytes(b / "y", b"1")
    atomic_write_bytes(b / "y", b"1")
    assert sorted(os.listdir(a)) == ["x"] and sorted(os.listdir(b)) == ["x", "y"]
