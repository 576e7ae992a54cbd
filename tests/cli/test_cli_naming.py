"""The `Bad input` list of issue 2, one test each, through the real `charframe` entry point."""

import os
from pathlib import Path

import pytest
from dataset_fixtures import krnk_tree, put_images

from charframe.util import toml as tomlio
from charframe.cli import main


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def files_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", ["tag", "toml", "prepare"])
def test_missing_path_names_it_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    ds = krnk_tree(tmp_path)
    before = files_under(tmp_path)
    rc, _, err = run(capsys, command, ds, tmp_path / "LoRAInput" / "3_missing")
    assert rc == 2
    assert err.strip() == f"error: {tmp_path / 'LoRAInput' / '3_missing'}: no such folder"
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("command", ["tag", "toml", "prepare"])
def test_file_where_folder_expected(tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    ds = krnk_tree(tmp_path)
    image = ds / "krnk girl_f0512" / "f00.png"
    before = files_under(tmp_path)
    rc, _, err = run(capsys, command, ds, image)
    assert rc == 2
    assert f"error: {image}: is a file, but a folder is expected" in err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("command", ["toml", "prepare"])
def test_two_size_classes_in_one_subset(tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    ds = krnk_tree(tmp_path)
    (ds / "4_krnk.toml").write_text("# hand-made\n", encoding="utf-8")
    put_images(ds / "krnk girl_f0384", ["f05.png"], (640, 640))
    put_images(ds / "krnk girl_f0384", ["f06.png"], (384, 1100))
    before = files_under(tmp_path)
    rc, _, err = run(capsys, command, ds)
    assert rc == 2
    assert "krnk girl_f0384: images fall in 3 size classes" in err
    assert "f05.png 640x640" in err and "f06.png 384x1100" in err and "384x384" in err
    assert "no TOML written" in err
    assert files_under(tmp_path) == before  # no captions, existing TOML untouched


def test_corrupt_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = krnk_tree(tmp_path)
    bad = ds / "krnk girl_f0768" / "f07.png"
    bad.write_bytes(b"not an image at all")
    rc, _, err = run(capsys, "prepare", ds)
    assert rc == 2 and f"{bad}: cannot read the image size" in err
    assert not (ds / "4_krnk.toml").exists() and not list(ds.rglob("*.txt"))


@pytest.mark.parametrize("command", ["tag", "toml", "prepare"])
def test_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    ds = tmp_path / "LoRAInput" / "4_empty"
    (ds / "empty girl_f0512").mkdir(parents=True)
    rc, _, err = run(capsys, command, ds)
    assert rc == 2 and "4_empty" in err and ("empty dataset" in err or "no png" in err)
    assert files_under(tmp_path) == {}


def test_hand_edited_caption_is_kept_or_backed_up_with_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = krnk_tree(tmp_path)
    assert run(capsys, "tag", ds)[0] == 0
    edited = ds / "krnk girl_f0512" / "f14.txt"
    edited.write_text("krnk, from above, my words", encoding="utf-8")
    rc, _, err = run(capsys, "prepare", ds)
    assert rc == 1  # done, but something needs the user's attention (a launcher pauses)
    assert f"warning: 1 caption(s) differ from the rules and look hand-edited; kept as they are: {edited}" in err
    assert "--force" in err
    assert edited.read_text(encoding="utf-8") == "krnk, from above, my words"
    assert (ds / "4_krnk.toml").exists()
    rc, _, err = run(capsys, "tag", "--force", ds)
    assert rc == 0 and "f14.txt.bak" in err
    assert edited.with_name("f14.txt.bak").read_text(encoding="utf-8") == "krnk, from above, my words"
    assert edited.read_text(encoding="utf-8").startswith("krnk, white background")


def test_toml_write_is_atomic(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = krnk_tree(tmp_path)
    (ds / "4_krnk.toml").write_text("# old\n", encoding="utf-8")
    real_replace = os.replace

    def crash(src: object, dst: object) -> None:
        if str(dst).endswith(".toml"):
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    assert main(["toml", str(ds)]) == 1
    assert "error: unexpected OSError: power cut (details in " in capsys.readouterr().err
    assert (ds / "4_krnk.toml").read_text(encoding="utf-8") == "# old\n"
    assert sorted(p.name for p in ds.iterdir() if p.is_file()) == ["4_krnk.toml", "4_krnk.toml.bak"]


def test_missing_repeats_prefix_gives_1_and_is_said_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = tmp_path / "LoRAInput" / "krnk"
    for size in (256, 512, 768):
        put_images(ds / f"krnk girl_f{size:04d}", ["f00.png", "f01.png"], (size, size))
    rc, _, err = run(capsys, "prepare", ds)
    assert rc == 0
    assert err.count("no repeats prefix") == 1 and "num_repeats = 1" in err
    assert tomlio.load(ds / "krnk.toml")["general"]["num_repeats"] == 1
    odd = tmp_path / "LoRAInput" / "v2_krnk"
    put_images(odd / "krnk girl_f0512", ["f00.png"], (512, 512))
    rc, _, err = run(capsys, "toml", odd)
    assert rc == 0 and err.count("no repeats prefix") == 1
    assert tomlio.load(odd / "v2_krnk.toml")["general"]["num_repeats"] == 1


def test_uncoded_images_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = krnk_tree(tmp_path, codes=("f00",))
    put_images(ds / "krnk girl_f0512", ["cover.png", "zz.webp"], (512, 512))
    rc, _, err = run(capsys, "tag", ds)
    assert rc == 0
    assert f"{ds / 'krnk girl_f0512'}: skipped 2 image(s) without a code [fb][0-2][0-7]: cover.png, zz.webp" in err


def test_toml_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = krnk_tree(tmp_path)
    (tmp_path / "sd-scripts").mkdir()
    rc, _, err = run(capsys, "toml", ds, "--vram", "12gb", "--relative-to", tmp_path / "sd-scripts")
    assert rc == 0 and "4_krnk.toml: written" in err
    data = tomlio.load(ds / "4_krnk.toml")
    assert [d["batch_size"] for d in data["datasets"]] == [4, 2]
    assert data["datasets"][0]["subsets"][0]["image_dir"].startswith("..")
    rc, _, err = run(capsys, "toml", ds, "--vram", "3gb")
    assert rc == 2 and "unknown VRAM profile '3gb'" in err


def test_explain_and_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, "explain", "f00", "--folder", "krnk girl_f0512")
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("krnk, white background, black background, simple background")
    assert any(line.split() == ["from", "front", "view-front", "(azimuth", "0,1,7)"] for line in lines)
    rules = tmp_path / "r.toml"
    rules.write_text('[[rule]]\nname = "pose"\ntags = ["standing"]\n', encoding="utf-8")
    rc, out, _ = run(capsys, "explain", "krnk girl_f0512/f00.png", "--rules", rules)
    assert "standing, nude" in out.splitlines()[0] and "straight standing" not in out
    assert f"[{rules}]" in out
    ds = krnk_tree(tmp_path, codes=("f00",))
    assert run(capsys, "tag", ds, "--rules", rules)[0] == 0
    assert "straight standing" not in (ds / "krnk girl_f0512" / "f00.txt").read_text(encoding="utf-8")


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture) -> None:
    for command in ("tag", "toml", "prepare", "explain"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "examples:" in capsys.readouterr().out


# --- hostile input (issue 12, points 10 and 11) -------------------------------------------------------------

@pytest.mark.parametrize("command", ["tag", "prepare", "explain"])
def test_rules_folder_or_binary_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    ds = krnk_tree(tmp_path)
    before = files_under(tmp_path)
    target = [ds] if command != "explain" else ["f00"]
    rc, _, err = run(capsys, command, *target, "--rules", tmp_path)
    assert rc == 2 and err.strip() == f"error: {tmp_path}: is a folder; pass the rules file itself"
    binary = tmp_path / "rules.bin"
    binary.write_bytes(b"\x00\x89PNG")
    rc, _, err = run(capsys, command, *target, "--rules", binary)
    assert rc == 2 and err.strip() == f"error: {binary}: a binary file, not a text rules file"
    binary.unlink()
    assert files_under(tmp_path) == before


def test_rules_type_error_names_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = krnk_tree(tmp_path)
    rules = tmp_path / "r.toml"
    rules.write_text('[captions]\nreplace = "no"\n', encoding="utf-8")
    rc, _, err = run(capsys, "tag", ds, "--rules", rules)
    assert rc == 2 and err.strip() == f"error: {rules}:2: captions.replace: expected true or false, got 'no'"
    assert not list(ds.rglob("*.txt"))


@pytest.mark.parametrize("what", ["missing", "file"])
def test_relative_to_must_be_an_existing_folder(tmp_path: Path, capsys: pytest.CaptureFixture, what: str) -> None:
    ds = krnk_tree(tmp_path)
    target = tmp_path / "sd-scriptz"
    if what == "file":
        target.write_text("x")
    before = files_under(tmp_path)
    for command in ("toml", "prepare"):
        rc, _, err = run(capsys, command, ds, "--relative-to", target)
        expected = "no such folder (image_dir paths would lead nowhere)" if what == "missing" else "is a file, but a folder is expected"
        assert rc == 2 and err.strip() == f"error: --relative-to {target}: {expected}"
        assert files_under(tmp_path) == before


def test_toml_and_prepare_take_the_model_family(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--family sdxl`: SDXL's bucketing (longer side up to 2048 in steps of 64) and its batch sizes (a 16 GB card
    trains 512² SDXL images 7 at a time, SD1.x's default profile 2); without it SD1.x's TOML, unchanged."""
    ds = tmp_path / "LoRAInput" / "4_krnk"
    put_images(ds / "krnk girl_f0512", ["f00.png", "f01.png"], (512, 512))
    assert run(capsys, "toml", ds)[0] == 0
    plain = tomlio.load(ds / "4_krnk.toml")
    assert "max_bucket_reso" not in plain["general"] and plain["datasets"][0]["batch_size"] == 2
    assert run(capsys, "prepare", ds, "--family", "sdxl", "--vram", "16gb")[0] == 0
    xl = tomlio.load(ds / "4_krnk.toml")
    assert (xl["general"]["min_bucket_reso"], xl["general"]["max_bucket_reso"], xl["general"]["bucket_reso_steps"]) == (
        256, 2048, 64)
    assert xl["datasets"][0]["batch_size"] == 7 and xl["datasets"][0]["resolution"] == [512, 512]
    rc, _, err = run(capsys, "toml", ds, "--family", "sd3")
    assert rc == 2 and "sd3" in err
