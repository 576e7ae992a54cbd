"""TOML reading and writing with real parsers/writers (tomllib/tomli and tomli-w).

Reading goes through `schema.read_text_file`, so a folder, a binary or a non-UTF-8 file passed where a TOML
file belongs is one clear message, like a syntax error (which names the line).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import tomli_w

from charframe.errors import CharframeError
from charframe.util.files import atomic_write_text
from charframe.util.schema import read_text_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def parse_text(text: str, path: str | os.PathLike) -> dict[str, Any]:
    """Parse TOML `text` read from `path`; a syntax error names the file and the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CharframeError(f"{path}: not valid TOML ({e}); fix the file or delete it") from None


def read(path: str | os.PathLike, what: str = "TOML file") -> tuple[dict[str, Any], str]:
    """(parsed data, text) of a TOML file: the text lets `schema.Source` point messages at lines."""
    text = read_text_file(path, what)
    return parse_text(text, path), text


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and the line."""
    return read(Path(path))[0]


def dumps(data: dict[str, Any]) -> str:
    return tomli_w.dumps(data)


def value(v: Any) -> str:
    """One TOML value as text (a string quoted and escaped as TOML needs), for files written line by line."""
    return tomli_w.dumps({"v": v})[4:].rstrip("\n")


def write(path: str | os.PathLike, data: dict[str, Any], *, parents: bool = True) -> None:
    """Write `data` as TOML, atomically; creates the folder (training state and plans live in fresh folders)."""
    atomic_write_text(path, dumps(data), parents=parents)
