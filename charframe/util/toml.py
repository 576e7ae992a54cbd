"""TOML reading and writing with real parsers/writers (tomllib/tomli and tomli-w)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import tomli_w

from charframe.errors import CharframeError
from charframe.util.files import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and the line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise CharframeError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise CharframeError(f"{path}: not valid TOML ({e}); fix the file or delete it") from None


def dumps(data: dict[str, Any]) -> str:
    return tomli_w.dumps(data)


def write(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write `data` as TOML, atomically."""
    atomic_write_text(path, dumps(data))
