import json
import os
from pathlib import Path

import pytest
from dataset_fixtures import krnk_tree, put_images

from charframe.dataset import prepare
from charframe.util import toml as tomlio
from charframe.dataset.captions import caption_for, load_rules
from charframe.errors import CharframeError
from charframe.dataset.prepare import MANIFEST, prepare_dirs, tag_dirs

WORKED = (
    "krnk, white background, black background, simple background, from horizontal, from front, upper body, "
    "standing, straight standing, nude, completely nude, bare shoulders, nipples, collarbone, abs, ribs, "
    "looking at viewer, smile, open mouth, blush"
)


def test_tag_writes_one_caption_per_coded_image(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    put_images(ds / "krnk girl_f0512", ["cover.png", "notes.PNG"], (512, 512))
    put_images(ds / "krnk girl_f0512" / ".hidden", ["f00.png"], (512, 512))
    report = tag_dirs([ds])
    sub = ds / "krnk girl_f0512"
    assert (sub / "f00.txt").read_text(encoding="utf-8") == WORKED
    assert (sub / "f14.txt").read_text(encoding="utf-8") == caption_for("f14", "krnk girl_f0512")
    assert not (sub / "cover.txt").exists() and not (sub / ".hidden" / "f00.txt").exists()
    assert report.written == 18 and report.folders == 6
    assert sorted(p.name for p in report.skipped) == ["cover.png", "notes.PNG"]
    again = tag_dirs([ds])
    assert (again.written, again.unchanged, again.kept) == (0, 18, [])


def test_unchanged_captions_are_not_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = krnk_tree(tmp_path)
    tag_dirs([ds])

    def no_reads(path: str) -> None:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(prepare, "_read_text", no_reads)
    report = tag_dirs([ds])
    assert (report.written, report.unchanged) == (0, 18)


def test_rule_change_updates_our_captions_but_keeps_hand_edits(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path)
    sub = ds / "krnk girl_f0512"
    tag_dirs([ds])
    (sub / "f02.txt").write_text("krnk, my careful hand edit", encoding="utf-8")
    (tmp_path / "charframe.toml").write_text('[captions]\nremove = ["background"]\n', encoding="utf-8")
    report = tag_dirs([ds])  # rules come from the project's charframe.toml
    assert "white background" not in (sub / "f00.txt").read_text(encoding="utf-8")
    assert (sub / "f02.txt").read_text(encoding="utf-8") == "krnk, my careful hand edit"
    assert report.kept == [sub / "f02.txt"] and report.written == 17
    forced = tag_dirs([ds], force=True)
    assert (sub / "f02.txt").read_text(encoding="utf-8") == caption_for("f02", sub.name, load_rules(tmp_path))
    assert forced.backups == [sub / "f02.txt.bak"]
    assert (sub / "f02.txt.bak").read_text(encoding="utf-8") == "krnk, my careful hand edit"
    assert tag_dirs([ds]).kept == []


def test_foreign_caption_without_manifest_is_kept(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path, codes=("f00", "f01"))
    sub = ds / "krnk girl_f0128"
    (sub / "f00.txt").write_text(WORKED + "\r\n", encoding="utf-8")  # same text, another tool's line end
    (sub / "f01.txt").write_bytes(b"\xff\xfe not utf-8")
    report = tag_dirs([sub])
    assert report.unchanged == 1 and report.kept == [sub / "f01.txt"]
    assert (sub / "f01.txt").read_bytes() == b"\xff\xfe not utf-8"
    manifest = json.loads((sub / MANIFEST).read_text())
    assert set(manifest["outputs"]) == {"f00.txt"}


def test_caption_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = krnk_tree(tmp_path, codes=("f00",))
    sub = ds / "krnk girl_f0128"
    tag_dirs([sub])
    (tmp_path / "charframe.toml").write_text('[captions]\nremove = ["pose"]\n', encoding="utf-8")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        tag_dirs([sub])
    assert (sub / "f00.txt").read_text(encoding="utf-8") == WORKED
    assert sorted(p.name for p in sub.iterdir()) == [MANIFEST, "f00.png", "f00.txt"]


def test_prepare_checks_everything_before_writing(tmp_path: Path) -> None:
    good = krnk_tree(tmp_path)
    bad = tmp_path / "LoRAInput" / "2_bad"
    put_images(bad / "bad_f0512", ["f00.png"], (512, 512))
    put_images(bad / "bad_f0512", ["f01.png"], (900, 512))
    with pytest.raises(CharframeError, match=r"f01\.png 900x512"):
        prepare_dirs([good, bad])
    assert not list(tmp_path.rglob("*.txt")) and not list(tmp_path.rglob("*.toml"))
    (bad / "bad_f0512" / "f01.png").unlink()
    report = prepare_dirs([tmp_path / "LoRAInput"], vram="12gb")
    assert [p.name for p in report.tomls] == ["2_bad.toml", "4_krnk.toml"]
    assert tomlio.load(good / "4_krnk.toml")["datasets"][0]["batch_size"] == 4
    assert report.tag.written == 19


def test_tag_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharframeError, match="empty: no png"):
        tag_dirs([tmp_path / "empty"])
    with pytest.raises(CharframeError, match="nope: no such folder"):
        tag_dirs([tmp_path / "nope"])


# --- hostile names and folders (issue 12, points 2 and 7) -----------------------------------------------

def _all_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_248_character_image_name_gets_its_caption(tmp_path: Path) -> None:
    sub = tmp_path / "LoRAInput" / "4_krnk" / "krnk girl_f0512"
    name = "f00" + "x" * 241 + ".png"
    assert len(name) == 248
    put_images(sub, [name], (64, 64))
    report = prepare_dirs([tmp_path / "LoRAInput" / "4_krnk"])
    assert report.tag.written == 1
    assert (sub / (name[:-4] + ".txt")).read_text(encoding="utf-8").startswith("krnk, white background")
    assert not [p for p in sub.iterdir() if p.name.endswith(".tmp")]


def test_242_character_dataset_name_is_prepared(tmp_path: Path) -> None:
    ds = tmp_path / "LoRAInput" / ("4_" + "k" * 240)
    put_images(ds / "krnk girl_f0512", ["f00.png"], (64, 64))
    report = prepare_dirs([ds])
    assert report.tomls == [ds / (ds.name + ".toml")] and report.tomls[0].is_file()


def test_dataset_name_too_long_for_its_toml_refused_before_any_caption(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from charframe.cli import main

    ds = tmp_path / "LoRAInput" / ("4_" + "k" * 250)  # 252 characters: fits, but `<name>.toml` (257) does not
    put_images(ds / "krnk girl_f0512", ["f00.png"], (64, 64))
    before = _all_files(tmp_path)
    assert main(["prepare", str(ds)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "longer than the file system allows" in err and "shorten the folder's name" in err
    assert _all_files(tmp_path) == before


def test_subset_linked_outside_the_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from charframe.cli import main

    ds = krnk_tree(tmp_path, codes=("f00",))
    outside = tmp_path / "elsewhere" / "krnk girl_f0256"
    put_images(outside, ["f01.png"], (256, 256))
    (ds / "krnk girl_f0999").symlink_to(outside, target_is_directory=True)
    before = _all_files(tmp_path)
    for command in ("tag", "prepare"):
        assert main([command, str(ds)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"a link to {outside}, outside {ds}" in err
        assert _all_files(tmp_path) == before
    assert sorted(p.name for p in outside.iterdir()) == ["f01.png"]  # no caption, no manifest there


def test_temporary_left_by_a_killed_caption_write_is_cleaned(tmp_path: Path) -> None:
    ds = krnk_tree(tmp_path, codes=("f00",))
    sub = ds / "krnk girl_f0512"
    stale = sub / ".cf-deadbeef.tmp"
    stale.write_text("half a caption")
    os.utime(stale, (1, 1))
    tag_dirs([ds])
    assert not stale.exists() and (sub / "f00.txt").is_file()
