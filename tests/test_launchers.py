import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bin"))  # the generator lives beside its output
from launchers import DEFAULT_OUT, differences, expected_files, load_table, main, write_launchers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_committed_bin_equals_the_generator_output() -> None:
    assert DEFAULT_OUT == REPO / "bin"
    assert differences(REPO / "bin") == [], "run: python bin/launchers.py"
    assert main(["--check"]) == 0


def test_table_rows() -> None:
    rows = {r.name: r.args for r in load_table()}
    assert rows == {
        "tag": ("tag",),
        "toml": ("toml",),
        "prepare": ("prepare",),
        "compress": ("compress",),
        "merge-face": ("merge", "--preset", "FACE"),
        "merge-body": ("merge", "--preset", "BODY"),
        "run": ("run",),
        "rerun-all": ("rerun", "--all"),
        "watch": ("watch", "--train"),
        "tensorboard": ("tensorboard",),
        "clean": ("clean",),
        "generate": ("generate",),
    }


def test_bat_passes_dropped_paths_finds_the_install_and_pauses_on_error() -> None:
    bat = expected_files()["merge-face.bat"]
    assert bat.count(b"\r\n") == bat.count(b"\n")  # CRLF only
    text = bat.decode()
    assert '"%CHARFRAME%" merge --preset FACE %*\r\n' in text
    for place in ("%REPO%\\.venv\\Scripts\\charframe.exe", "%VIRTUAL_ENV%\\Scripts\\charframe.exe",
                  "%CONDA_PREFIX%\\Scripts\\charframe.exe", "%%~$PATH:P"):
        assert place in text
    assert 'set "REPO=%~dp0.."' in text and ":notfound" in text and "Tried:" in text
    assert "pause" in text and "exit /b %RC%" in text
    # no parenthesised block holds a path: "C:\\Program Files (x86)\\…" would end it early
    assert "(\r\n" not in text


def test_generator_writes_removes_stale_and_keeps_other_files(tmp_path: Path) -> None:
    (tmp_path / "install.sh").write_text("#!/bin/sh\necho mine\n")
    stale = expected_files()["tag.sh"].replace(b"tag", b"oldname")
    (tmp_path / "old.sh").write_bytes(stale)
    written = write_launchers(tmp_path)
    assert len(written) == 2 * len(load_table()) and differences(tmp_path) == []
    assert not (tmp_path / "old.sh").exists() and (tmp_path / "install.sh").read_text() == "#!/bin/sh\necho mine\n"
    (tmp_path / "tag.bat").write_text("edited")
    assert differences(tmp_path) == [f"{tmp_path / 'tag.bat'}: differs from the table"]
    assert main(["--check", "--out", str(tmp_path)]) == 1


POSIX = pytest.mark.skipif(os.name != "posix" or not shutil.which("sh"), reason="POSIX shell launcher")


def _fake_charframe(path: Path, label: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho {label}\nfor a in "$@"; do echo "[$a]"; done\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def spaced(tmp_path: Path) -> dict[str, Path]:
    """A checkout in a folder with spaces, another folder to start from, and two dropped files with spaces."""
    repo = tmp_path / "my charframe repo"
    (repo / "bin").mkdir(parents=True)
    write_launchers(repo / "bin")
    elsewhere = tmp_path / "some other folder"
    elsewhere.mkdir()
    chars = tmp_path / "My Project" / "Characters"
    chars.mkdir(parents=True)
    files = [chars / "krnk.toml", chars / "tyank (2) it's.toml"]
    for f in files:
        f.write_text('keyword = "x"\n')
    return {"repo": repo, "elsewhere": elsewhere, "a": files[0], "b": files[1], "home": tmp_path / "home"}


def _run(launcher: Path, args: list[str], cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PATH", "HOME")}
    base = {"PATH": "/usr/bin:/bin", "HOME": str(home)}  # no charframe on this PATH
    return subprocess.run([str(launcher), *args], cwd=cwd, env={**clean, **base, **env}, capture_output=True, text=True)


@POSIX
def test_sh_finds_the_venv_inside_the_repo_from_another_folder_with_two_dropped_files(spaced) -> None:
    _fake_charframe(spaced["repo"] / ".venv" / "bin" / "charframe", "VENV")
    _fake_charframe(spaced["home"] / "elsewhere-env" / "bin" / "charframe", "ACTIVE")
    r = _run(spaced["repo"] / "bin" / "run.sh", [str(spaced["a"]), str(spaced["b"])], spaced["elsewhere"], spaced["home"],
             VIRTUAL_ENV=str(spaced["home"] / "elsewhere-env"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["VENV", "[run]", f"[{spaced['a']}]", f"[{spaced['b']}]"]  # the repo's .venv first


@POSIX
@pytest.mark.parametrize("how", ["PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "link"])
def test_sh_finds_an_install_outside_the_repo(spaced, tmp_path: Path, how: str) -> None:
    env_dir = tmp_path / "venvs" / "char frame env"
    _fake_charframe(env_dir / "bin" / "charframe", how)
    launcher = spaced["repo"] / "bin" / "clean.sh"
    extra = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin"} if how in ("PATH", "link") else {how: str(env_dir)}
    if how == "link":  # a link to the launcher on the desktop: the repo is still found, charframe via PATH
        desktop = tmp_path / "Desk top"
        desktop.mkdir()
        (desktop / "clean").symlink_to(launcher)
        launcher = desktop / "clean"
        _fake_charframe(spaced["repo"] / ".venv" / "bin" / "charframe", "link")
        extra = {}
    r = _run(launcher, [str(spaced["a"]), str(spaced["b"])], spaced["elsewhere"], spaced["home"], **extra)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [how, "[clean]", f"[{spaced['a']}]", f"[{spaced['b']}]"]


@POSIX
def test_sh_says_where_it_looked_when_there_is_no_install(spaced) -> None:
    r = _run(spaced["repo"] / "bin" / "rerun-all.sh", [str(spaced["a"])], spaced["elsewhere"], spaced["home"],
             VIRTUAL_ENV=str(spaced["home"] / "gone"))
    assert r.returncode == 127 and r.stdout == ""
    err = r.stderr
    for place in (f"{spaced['repo']}/.venv/bin/charframe", f"VIRTUAL_ENV={spaced['home'] / 'gone'}", "CONDA_PREFIX=not set",
                  "charframe on PATH (/usr/bin:/bin)", f'bash "{spaced["repo"]}/bin/install.sh"'):
        assert place in err, place


@POSIX
def test_sh_runs_the_real_cli_from_a_venv_in_the_repo_on_two_dropped_folders(spaced, tmp_path: Path) -> None:
    """The repo's .venv holding the real console script; prepare on two dataset folders with spaces."""
    real = Path(sys.executable).parent / "charframe"
    if not real.is_file():
        pytest.skip("no charframe console script beside this interpreter")
    (spaced["repo"] / ".venv" / "bin").mkdir(parents=True)
    (spaced["repo"] / ".venv" / "bin" / "charframe").symlink_to(real)
    example = REPO / "examples" / "4_demo" / "demo girl_f0128"
    folders = []
    for name in ("4_krnk", "2_krnk sf_krnk"):
        d = tmp_path / "My Project" / "LoRAInput" / name / "krnk girl_f0128"
        shutil.copytree(example, d)
        folders.append(str(d.parent))
    r = _run(spaced["repo"] / "bin" / "prepare.sh", folders, spaced["elsewhere"], spaced["home"])
    assert r.returncode == 0, r.stderr
    for folder in folders:
        assert (Path(folder) / f"{Path(folder).name}.toml").is_file()
        assert list((Path(folder) / "krnk girl_f0128").glob("*.txt"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX shell launcher")
def test_repo_launcher_runs_the_real_cli() -> None:
    # the repo's .venv if there is one, else the `charframe` beside this interpreter on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(REPO / "bin" / "prepare.sh"), "--help"], env=env, capture_output=True, text=True, check=True).stdout
    assert "usage: charframe prepare" in out and "examples:" in out
