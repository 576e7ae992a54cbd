"""Generate the drag-and-drop launchers in `bin/` from one table (`bin/launchers.toml`).

Each row becomes `bin/<name>.bat` (Windows: passes the dropped paths `%*`, pauses when the command
fails so the message stays readable) and `bin/<name>.sh` (POSIX, `"$@"`). Both find the install the
ways users have it — the repository's `.venv` (or `venv`), the active virtual or conda environment,
`charframe` on PATH, pip's user folder — and, when there is none, say every place they tried. They work
from any folder, through a link, with spaces in paths. No other logic lives in the launchers: what a
dropped file means is the command's business.

    python bin/launchers.py            # rewrite bin/
    python bin/launchers.py --check    # exit 1 if bin/ differs from the table
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from charframe.util import toml as tomlio
from charframe.errors import CharframeError
from charframe.util.files import atomic_write_bytes

TABLE = Path(__file__).with_name("launchers.toml")
DEFAULT_OUT = Path(__file__).resolve().parent
MARKER = "Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit."
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ARG = re.compile(r"-{0,2}[A-Za-z0-9][A-Za-z0-9_.=-]*")
_TEXT = re.compile(r"[^%^&|<>\"'`$\\\x00-\x1f]*")  # safe in a cmd `rem` and a sh comment


@dataclass(frozen=True)
class Launcher:
    name: str
    args: tuple[str, ...]
    help: str


def load_table(path: Path = TABLE) -> list[Launcher]:
    rows = []
    for row in tomlio.load(path).get("launcher", []):
        launcher = Launcher(row["name"], tuple(row["args"]), row["help"])
        plain = _WORD.fullmatch(launcher.name) and all(_ARG.fullmatch(a) for a in launcher.args)
        if not plain or not _TEXT.fullmatch(launcher.help):
            raise CharframeError(f"{path}: launcher {launcher.name!r}: name and args are plain words, help has no shell characters")
        rows.append(launcher)
    return rows


def _script(launcher: Launcher, first: str, comment: str, body: list[str], newline: str) -> bytes:
    """A launcher file: its first line, two comment lines (what it does, where it comes from), body."""
    command = " ".join(launcher.args)
    head = [first, f"{comment} charframe {command}: {launcher.help}", f"{comment} {MARKER}"]
    lines = head + [line.replace("{command}", command) for line in body]
    return (newline.join(lines) + newline).encode("ascii")


# Where the install is, in the order users have it: the repository's .venv (bin/install.sh makes it), a venv
# beside it named venv, the active virtual environment ($VIRTUAL_ENV) or conda environment ($CONDA_PREFIX),
# `charframe` on PATH, pip's user folder. None found: say every place tried and how to install.
_BAT_BODY = [
    "setlocal",
    'set "CHARFRAME="',
    'set "REPO=%~dp0.."',
    'if exist "%REPO%\\.venv\\Scripts\\charframe.exe" set "CHARFRAME=%REPO%\\.venv\\Scripts\\charframe.exe"',
    'if not defined CHARFRAME if exist "%REPO%\\venv\\Scripts\\charframe.exe" set "CHARFRAME=%REPO%\\venv\\Scripts\\charframe.exe"',
    'if not defined CHARFRAME if defined VIRTUAL_ENV if exist "%VIRTUAL_ENV%\\Scripts\\charframe.exe" set "CHARFRAME=%VIRTUAL_ENV%\\Scripts\\charframe.exe"',
    'if not defined CHARFRAME if defined CONDA_PREFIX if exist "%CONDA_PREFIX%\\Scripts\\charframe.exe" set "CHARFRAME=%CONDA_PREFIX%\\Scripts\\charframe.exe"',
    'if not defined CHARFRAME for %%P in (charframe.exe) do if not "%%~$PATH:P"=="" set "CHARFRAME=%%~$PATH:P"',
    "if not defined CHARFRAME goto notfound",
    '"%CHARFRAME%" {command} %*',
    'set "RC=%ERRORLEVEL%"',
    'if "%RC%"=="0" goto end',
    "echo.",
    "echo charframe {command} stopped with exit code %RC%: see the messages above.",
    "pause",
    "goto end",
    ":notfound",
    "echo charframe {command}: charframe is not installed where this launcher looks. Tried:",
    "echo   %REPO%\\.venv\\Scripts\\charframe.exe",
    "echo   %REPO%\\venv\\Scripts\\charframe.exe",
    "echo   the active virtual environment (VIRTUAL_ENV=%VIRTUAL_ENV%)",
    "echo   the active conda environment (CONDA_PREFIX=%CONDA_PREFIX%)",
    "echo   charframe.exe on PATH",
    "echo Install it into %REPO%\\.venv as the README says (Set-up, Windows), or activate the environment",
    "echo that has it and start this launcher from that console.",
    'set "RC=9009"',
    "pause",
    ":end",
    "endlocal & exit /b %RC%",
]
_SH_BODY = [
    'self=$0',
    'while [ -L "$self" ]; do  # a link on the desktop: find the real bin/ folder',
    '  link=$(readlink "$self")',
    '  case $link in /*) self=$link ;; *) self=$(dirname -- "$self")/$link ;; esac',
    'done',
    'repo=$(CDPATH= cd -- "$(dirname -- "$self")/.." && pwd)',
    'for exe in "$repo/.venv/bin/charframe" "$repo/venv/bin/charframe" \\',
    '    ${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/charframe"} ${CONDA_PREFIX:+"$CONDA_PREFIX/bin/charframe"}; do',
    '  if [ -x "$exe" ]; then exec "$exe" {command} "$@"; fi',
    'done',
    'if command -v charframe >/dev/null 2>&1; then exec charframe {command} "$@"; fi',
    'if [ -x "$HOME/.local/bin/charframe" ]; then exec "$HOME/.local/bin/charframe" {command} "$@"; fi',
    '{',
    '  echo "charframe {command}: charframe is not installed where this launcher looks. Tried:"',
    '  echo "  $repo/.venv/bin/charframe"',
    '  echo "  $repo/venv/bin/charframe"',
    '  echo "  the active virtual environment (VIRTUAL_ENV=${VIRTUAL_ENV:-not set})"',
    '  echo "  the active conda environment (CONDA_PREFIX=${CONDA_PREFIX:-not set})"',
    '  echo "  charframe on PATH ($PATH)"',
    '  echo "  $HOME/.local/bin/charframe"',
    '  echo "Install it: bash \\"$repo/bin/install.sh\\" (makes $repo/.venv), or activate the environment that has it."',
    '} >&2',
    'exit 127',
]


def render_bat(launcher: Launcher) -> bytes:
    """Windows: dropped paths arrive as %*; a failure pauses so the message stays on screen."""
    return _script(launcher, "@echo off", "rem", _BAT_BODY, "\r\n")


def render_sh(launcher: Launcher) -> bytes:
    return _script(launcher, "#!/bin/sh", "#", _SH_BODY, "\n")


def expected_files(table: Path = TABLE) -> dict[str, bytes]:
    """File name → content for every launcher of the table."""
    out: dict[str, bytes] = {}
    for launcher in load_table(table):
        out[f"{launcher.name}.bat"] = render_bat(launcher)
        out[f"{launcher.name}.sh"] = render_sh(launcher)
    return out


def _generated(path: Path) -> bool:
    if path.suffix not in (".bat", ".sh"):  # the generator and its table live in bin/ too
        return False
    try:
        return MARKER.encode() in path.read_bytes()[:1024]
    except OSError:
        return False


def differences(out_dir: Path = DEFAULT_OUT, table: Path = TABLE) -> list[str]:
    """Problems with `out_dir` as the table would write it (empty = up to date)."""
    problems = []
    expected = expected_files(table)
    for name, data in expected.items():
        path = out_dir / name
        if not path.is_file() or path.read_bytes() != data:
            problems.append(f"{path}: differs from the table")
        elif name.endswith(".sh") and os.name == "posix" and not os.access(path, os.X_OK):
            problems.append(f"{path}: not executable")
    stale = [p for p in sorted(out_dir.glob("*")) if p.name not in expected and _generated(p)]
    problems += [f"{p}: generated launcher no longer in the table" for p in stale]
    return problems


def write_launchers(out_dir: Path = DEFAULT_OUT, table: Path = TABLE) -> list[Path]:
    """Write every launcher (and remove generated ones that left the table); hand-written files stay."""
    expected = expected_files(table)
    written = []
    for name, data in expected.items():
        path = out_dir / name
        if not path.is_file() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
            written.append(path)
        path.chmod(0o755 if name.endswith(".sh") else 0o644)
    for p in out_dir.glob("*"):
        if p.name not in expected and _generated(p):
            p.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bin/launchers.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write (default: {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when bin/ is out of date")
    args = ap.parse_args(argv)
    if args.check:
        problems = differences(args.out)
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for path in write_launchers(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
