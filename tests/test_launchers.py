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


def test_bat_passes_dropped_paths_and_pauses_on_error() -> None:
    bat = expected_files()["merge-face.bat"]
    assert bat.count(b"\r\n") == bat.count(b"\n")  # CRLF only
    text = bat.decode()
    assert '"%CHARFRAME%" merge --preset FACE %*\r\n' in text
    assert "%~dp0..\\.venv\\Scripts\\charframe.exe" in text and 'set "CHARFRAME=charframe"' in text
    assert 'if not "%RC%"=="0" (' in text and "pause" in text and "exit /b %RC%" in text


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


@pytest.mark.skipif(os.name != "posix" or not shutil.which("sh"), reason="POSIX shell launcher")
def test_sh_uses_venv_or_path_and_passes_arguments(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    write_launchers(repo / "bin")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for where, label in ((fake / "charframe", "PATH"), (repo / ".venv" / "bin" / "charframe", "VENV")):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(f'#!/bin/sh\necho {label}\nfor a in "$@"; do echo "[$a]"; done\n')
        where.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    args = ["LoRAInput/4_krnk", "krnk girl, it's_f0512"]
    out = subprocess.run([str(repo / "bin" / "merge-body.sh"), *args], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["VENV", "[merge]", "[--preset]", "[BODY]", "[LoRAInput/4_krnk]", "[krnk girl, it's_f0512]"]
    shutil.rmtree(repo / ".venv")
    out = subprocess.run(["sh", str(repo / "bin" / "tag.sh"), *args], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["PATH", "[tag]", "[LoRAInput/4_krnk]", "[krnk girl, it's_f0512]"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX shell launcher")
def test_repo_launcher_runs_the_real_cli() -> None:
    # the repo's .venv if there is one, else the `charframe` beside this interpreter on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(REPO / "bin" / "prepare.sh"), "--help"], env=env, capture_output=True, text=True, check=True).stdout
    assert "usage: charframe prepare" in out and "examples:" in out
