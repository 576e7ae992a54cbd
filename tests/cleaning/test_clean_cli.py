"""`charframe clean / pick / export` through charframe.cli.main: the flow, and bad input as one error (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from charframe.cleaning.images import read_image
from charframe.cli import main
from charframe.testing.figures import make_project


def test_clean_pick_export_flow(tmp_path: Path, capsys) -> None:
    char = str(make_project(tmp_path, ("f00", "f02"), candidates=2, size=128))
    assert main(["-q", "clean", char, "--method", "flood"]) == 0
    assert main(["pick", char, "f02:0"]) == 0
    err = capsys.readouterr().err
    assert "f02      0" in err and "by hand" in err and "auto" in err
    assert main(["export", char, "--sizes", "64,128", "--alpha-mask"]) == 0
    ds = tmp_path / "LoRAInput/4_krnk"
    assert sorted(p.relative_to(ds).as_posix() for p in ds.rglob("*.png")) == sorted(
        f"krnk girl_{m}f{s:04d}/{c}.png" for m in ("", "alpha_") for s in (64, 128) for c in ("f00", "f02"))
    assert read_image(ds / "krnk girl_f0064/f02.png", 3).shape == (64, 64, 3)


@pytest.mark.parametrize("args,message", [
    (["clean", "{char}", "--method", "rembg", "--model", "u2net"], "--model u2net: the model file u2net.onnx is not here"),
    (["clean", "{char}", "--set", "body"], "--set body needs --outfit"),
    (["pick", "{char}", "f99:1"], "bad pick 'f99:1'"),
    (["pick", "{char}", "f03:0"], "no candidates of f03"),
    (["export", "{char}"], "no picks yet"),
    (["export", "{char}", "--sizes", "100"], "--sizes must be multiples of 8"),
    (["clean", "{bad}"], "bad.toml:1: fill"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, monkeypatch, capsys, args, message) -> None:
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    char = make_project(tmp_path, ("f00",), candidates=1)
    bad = tmp_path / "Characters/bad.toml"
    bad.write_text('fill = "grey"\nkeyword = "x"\n', encoding="utf-8")
    argv = [a.format(char=char, bad=bad) for a in args]
    if argv[0] == "pick":
        assert main(["-q", "clean", str(char), "--method", "flood"]) == 0
        capsys.readouterr()
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before  # nothing written, nothing lost


def test_help_has_examples(capsys) -> None:
    for command in ("clean", "pick", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"charframe {command} Characters/krnk.toml" in capsys.readouterr().out


BAD_CHARACTER_FILES = {
    "missing": None, "folder": "DIR", "empty": b"", "random": bytes(range(256)) * 4,
    "truncated": b'keyword = "kr', "non_utf8": b'keyword = "krnk"\n# \xff\xfe\n', "long_name": "LONG",
}


@pytest.mark.parametrize("command", ["clean", "pick", "export"])
@pytest.mark.parametrize("kind", list(BAD_CHARACTER_FILES))
def test_bad_character_file(tmp_path: Path, monkeypatch, capsys, command: str, kind: str) -> None:
    content = BAD_CHARACTER_FILES[kind]
    path = tmp_path / ("L" * 300 + ".toml" if content == "LONG" else f"{kind}.toml")
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "unexpected" not in err
    assert sorted(tmp_path.rglob("*")) == before


def test_clean_a_project_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "no-models"))
    make_project(tmp_path, ("f00",), candidates=1)
    assert main(["-q", "clean", str(tmp_path / "Characters"), "--method", "auto"]) == 0  # no rembg model: flood
    assert (tmp_path / "LoRAWork/krnk/face/alpha/f00-0.png").is_file()


def test_clean_takes_body_sets_and_group_files_as_dropped(tmp_path: Path, capsys) -> None:
    """From a launcher nobody types --set: a character file cleans every set with candidates, a group file its
    members' sets (and says so)."""
    import shutil

    char = make_project(tmp_path, ("f00",), candidates=1, character_extra='[outfits]\nsf = "sailor uniform"\n')
    work = tmp_path / "LoRAWork"
    (work / "krnk/body-sf/raw").mkdir(parents=True)
    shutil.copy(work / "krnk/face/raw/f00-0.png", work / "krnk/body-sf/raw/b00-0.png")
    (tmp_path / "Characters/tyank.toml").write_text('keyword = "tyank"\n[outfits]\nkps = "kimono"\n', encoding="utf-8")
    shutil.copytree(work / "krnk/face", work / "tyank/face")
    group = tmp_path / "Characters/krnk_tyank.group.toml"
    group.write_text('[[member]]\ncharacter = "krnk"\noutfit = "sf"\n[[member]]\ncharacter = "tyank"\noutfit = "kps"\n',
                     encoding="utf-8")
    assert main(["clean", str(group), "--method", "flood"]) == 0
    err = capsys.readouterr().err
    assert "krnk_tyank.group.toml is a group file" in err and "krnk face + body-sf, tyank face + body-kps" in err
    assert "unknown key" not in err
    for folder in ("krnk/face", "krnk/body-sf", "tyank/face"):
        assert (work / folder / "alpha").is_dir(), folder
    shutil.rmtree(work / "krnk/body-sf/clean")
    assert main(["-q", "clean", str(char), "--method", "flood"]) == 0  # a character file: face and body-sf
    assert (work / "krnk/body-sf/clean/b00-0.png").is_file()
