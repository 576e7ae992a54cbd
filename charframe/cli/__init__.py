"""`charframe` command line: a thin layer that turns arguments into library calls.

Each area registers its subcommands from its own module (`charframe/cli/<area>.py`, a function
`register(subparsers)`); heavy libraries (torch, diffusers) are imported inside the command
functions so that `charframe --help` and the naming commands start instantly.
Nothing below this package sees argparse.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import traceback
from pathlib import Path

from charframe import __version__
from charframe.deps import quiet_dependency_notes
from charframe.errors import CharframeError

# Order = order in `charframe --help`.
COMMAND_MODULES = ("naming", "templates", "generate", "clean", "train", "lora", "pipeline", "demo", "env")

EPILOG = """\
typical flow:
  charframe demo                            # try the whole flow once (example dataset, tiny demo model)
  charframe templates                       # (re)render FaceTemplate/ and BodyTemplate/
  charframe prepare "LoRAInput/4_krnk"      # captions + dataset TOML from folder names
  charframe train LoRAInput/4_krnk --logic Lora3x3A50p-AdamW8 --dim 128 --lr 100 --steps 1000 --out krnk --model M.safetensors
  charframe merge LoRAOutput/krnk/*.safetensors --preset FACE
  charframe compress LoRAOutput/krnk/*-FACE.safetensors
run `charframe COMMAND --help` for each command's options and examples.
"""


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


class _TqdmHandler(logging.StreamHandler):
    """Writes through tqdm so messages print above a running progress bar instead of inside it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger("charframe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charframe",
        description="Consistent anime-character LoRAs from file and folder names.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"charframe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"charframe.cli.{name}").register(sub)
    return parser


def flag_for(parser: argparse.ArgumentParser, command: str | None, param: str | None) -> str | None:
    """The option string (`--clip-skip`) whose destination is the library keyword `param` (`clip_skip`)."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command_parser = sub.choices.get(command) if sub and command else None
    for action in (command_parser or parser)._actions:
        if action.dest == param and action.option_strings:
            return max(action.option_strings, key=len)
        if action.dest == param:
            return action.metavar if isinstance(action.metavar, str) else param.upper()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(-1 if args.quiet else args.verbose)
    quiet_dependency_notes()
    try:
        return int(args.func(args) or 0)
    except CharframeError as e:
        logging.getLogger("charframe").error(e.render(flag_for(parser, args.command, e.param)) if e.param else str(e))
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.filename is None or not e.strerror:
            return _unexpected(e, argv, args.verbose)
        # the system refused a path the user gave (name too long, permission, disk full …): say which and why
        names = f"{e.filename} → {e.filename2}" if e.filename2 else f"{e.filename}"
        logging.getLogger("charframe").error(f"{names}: {e.strerror}")
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an unforeseen input: one line here, the whole story in a log file
        return _unexpected(e, argv, args.verbose)


def _unexpected(e: BaseException, argv: list[str] | None, verbose: int) -> int:
    """Report an exception nobody foresaw: one line with the log file's path (-v: the traceback too); exit 1."""
    log_path = write_crash_log(sys.argv[:1] + list(argv if argv is not None else sys.argv[1:]))
    first = (str(e).strip().splitlines() or [""])[0][:300]
    where = f"details in {log_path}" if log_path else "no log could be written; rerun with -v for details"
    logging.getLogger("charframe").error(f"unexpected {type(e).__name__}: {first} ({where})")
    if verbose:
        traceback.print_exc(file=sys.stderr)
    return 1


LOG_KEEP = 50  # crash logs kept; older ones are removed


def crash_log_dir() -> Path:
    """Where tracebacks of unexpected errors go: `<cache>/logs` ($CHARFRAME_CACHE_DIR honoured)."""
    from charframe.util.files import user_cache_dir

    return user_cache_dir() / "logs"


def write_crash_log(argv: list[str]) -> Path | None:
    """Write the current exception's traceback, the command and the versions to a new log file; its path."""
    import datetime
    import os
    import platform

    body = (
        f"charframe {__version__}, Python {platform.python_version()} on {platform.platform()}\n"
        f"command: {' '.join(argv)}\ncwd: {os.getcwd()}\n\n{traceback.format_exc()}"
    )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (crash_log_dir(), Path(tempfile.gettempdir()) / "charframe-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"charframe-{stamp}-{os.getpid()}.log"
            path.write_text(body, encoding="utf-8")
        except OSError:
            continue
        for old in sorted(folder.glob("charframe-*.log"))[:-LOG_KEEP]:
            old.unlink(missing_ok=True)
        return path
    return None
