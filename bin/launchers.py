"""Generate the drag-and-drop launchers in `bin/` from one table (`bin/launchers.toml`).

Each row becomes `bin/<name>.bat` (Windows: passes the dropped paths `%*`, pauses when the command
fails so the message stays readable) and `bin/<name>.sh` (POSIX, `"$@"`). Both prefer the
repository's `.venv` and fall back to `charframe` on PATH. No logic lives in the launchers.

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


_BAT_BODY = [
    "setlocal",
    'set "CHARFRAME=%~dp0..\\.venv\\Scripts\\charframe.exe"',
    'if not exist "%CHARFRAME%" set "CHARFRAME=charframe"',
    '"%CHARFRAME%" {command} %*',
    'set "RC=%ERRORLEVEL%"',
    'if not "%RC%"=="0" (',
    "  echo.",
    "  echo charframe {command} stopped with exit code %RC%: see the messages above.",
    "  pause",
    ")",
    "endlocal & exit /b %RC%",
]
_SH_BODY = [
    'venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"',
    'if [ -x "$venv_charframe" ]; then',
    '  exec "$venv_charframe" {command} "$@"',
    "fi",
    'exec charframe {command} "$@"',
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
