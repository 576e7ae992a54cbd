"""Typed configuration records read from TOML, validated in one place.

Every file a user writes by hand (charframe.toml, a character file, a dataset TOML) is declared as a small
frozen dataclass and read through `parse`, so each gets the same checks and the same kind of message:

    Characters/krnk.toml:7: [generation] steps: expected an integer ≥ 1, got "many"

- types: `bool` accepts only true/false (never "no"), `int` never a bool, `float` ints too and must be
  finite, `str`, `Literal[...]` choices, `tuple[T, ...]`, `dict[str, T]`, nested dataclasses, `T | None`;
- ranges: `field(metadata=limits(min=1, max=12))` (for a list: of each item, and `min_items`); `metadata={"toml": "class"}` spells a key that is a
  Python keyword; `metadata={"skip": True}` marks a field that is not read from the file;
- unknown keys (a misspelt section or key) are errors that name the key and suggest the closest known one;
- the line is found in the file's text, so the message points at it.

`dump` is the inverse (None values left out): records round-trip through TOML.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

from charframe.errors import CharframeError
from charframe.util.files import read_small_file

T = TypeVar("T")


def limits(*, min: float | None = None, max: float | None = None, help: str = "", min_items: int = 0) -> dict[str, Any]:
    """Field metadata: inclusive bounds (of a number, or of each item of a list), a short description used in
    messages, and for a list the fewest items it may have (`min_items=1`: an empty list is refused)."""
    return {"min": min, "max": max, "help": help, "min_items": min_items}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the values come from: the file (for messages) and its text (to find the line of a key)."""

    path: str
    text: str = ""

    def line_of(self, section: tuple[str, ...], key: str | None) -> int | None:
        """Line (1-based) of `key` inside table `section`, else of the table header, else None."""
        if not self.text:
            return None
        current: tuple[str, ...] = ()
        header_line = None
        want = tuple(re.sub(r"\[\d+\]$", "", p) for p in section)
        key = re.sub(r"\[\d+\]$", "", key) if key else key
        for number, raw in enumerate(self.text.splitlines(), 1):
            line = raw.strip()
            head = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", line)
            if head:
                current = tuple(p.strip().strip('"\'') for p in head.group(1).split("."))
                if current == want and header_line is None:
                    header_line = number
                if key is not None and current[: len(want) + 1] == want + (key,):
                    return number
                continue
            if key is None:
                continue
            m = _KEY_LINE.match(line)
            if not m:
                continue
            dotted = tuple(a or b or c for a, b, c in _KEY_PART.findall(m.group(1)))
            full = current + dotted
            if full[: len(want) + 1] == want + (key,):
                return number
        return header_line


_KEY_PART = re.compile(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)')
_KEY_LINE = re.compile(r'^((?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+))*)\s*=')


def where(src: Source, section: tuple[str, ...], key: str | None) -> str:
    """`file:line: section.key` (the line when the source text has it): how every message names a setting."""
    line = src.line_of(section, key)
    label = ".".join(section + ((key,) if key else ()))
    return f"{src.path}:{line}: {label}" if line else f"{src.path}: {label}"


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


class _Bad(Exception):
    def __init__(self, message: str, section: tuple[str, ...], key: str | None) -> None:
        super().__init__(message)
        self.message, self.section, self.key = message, section, key


def _convert(value: Any, tp: Any, section: tuple[str, ...], key: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str | None = None) -> _Bad:
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        return _Bad(f"expected {expected or _describe(tp)}, got {shown}", section, key)

    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        errors = []
        for a in inner:
            try:
                return _convert(value, a, section, key, meta)
            except _Bad as e:
                errors.append(e)
        deeper = [e for e in errors if (e.section, e.key) != (section, key)]  # the shape matched, an item did not
        if len(errors) == 1 or deeper:  # `T | None`: T's own message, with its range
            raise (deeper or errors)[0]
        raise bad()
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and not isinstance(value, int)):
            raise bad(_range_text(tp, meta))
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(_range_text(tp, meta))
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise bad(_range_text(tp, meta))
        return float(value) if tp is float else value
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if origin is Literal:
        if value not in args:
            raise bad()
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise bad()
        if len(value) < meta.get("min_items", 0):
            got = "an empty list" if not value else f"{len(value)}"
            raise _Bad(f"expected at least {meta['min_items']} item{'s' if meta['min_items'] > 1 else ''}, got {got}",
                       section, key)
        item = args[0]
        return tuple(_convert(v, item, section, f"{key}[{i}]", meta) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {str(k): _convert(v, args[1], section + (key,), str(k), meta) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _record(tp, value, section + (key,))
    raise TypeError(f"schema: unsupported field type {tp!r}")  # a programming error, not user input


def _range_text(tp: Any, meta: Mapping[str, Any]) -> str:
    kind = "an integer" if tp is int else "a finite number"
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} ≥ {lo}"
    if hi is not None:
        return f"{kind} ≤ {hi}"
    return kind


@functools.lru_cache(maxsize=None)
def _layout(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field], dict[str, str]]:
    """Type hints, fields and TOML key → field name of a record class (resolving hints evaluates every
    annotation string: once per class, not per record parsed)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("skip")}
    names = {f.metadata.get("toml", f.name): f.name for f in fields.values()}
    return hints, fields, names


def _record(cls: type[T], data: Mapping[str, Any], section: tuple[str, ...], base: Any = None) -> T:
    """A `cls` from `data`; keys missing from `data` take `base`'s values when given (a nested table's default
    record: `[training.body]` with only `steps` keeps the body stage's BODY preset), else the field defaults."""
    hints, fields, names = _layout(cls)
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}"
            raise _Bad(f"unknown key{hint}", section, str(key))
    kwargs = {}
    for toml_key, name in names.items():
        f = fields[name]
        if toml_key in data:
            value, default = data[toml_key], f.default
            if isinstance(value, dict) and dataclasses.is_dataclass(default) and not isinstance(default, type):
                kwargs[name] = _record(type(default), value, section + (toml_key,), base=default)
            else:
                kwargs[name] = _convert(value, hints[name], section, toml_key, f.metadata)
        elif base is not None:
            kwargs[name] = getattr(base, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Bad("required key is missing", section, toml_key)
    return cls(**kwargs)


def parse(cls: type[T], data: Mapping[str, Any], source: Source | str | Path, section: tuple[str, ...] = ()) -> T:
    """`data` (parsed TOML) as a `cls` record; any problem is one `CharframeError` naming file, line and key."""
    src = source if isinstance(source, Source) else Source(str(source))
    try:
        return _record(cls, data, tuple(section))
    except _Bad as e:
        raise CharframeError(f"{where(src, e.section, e.key)}: {e.message}") from None


def dump(record: Any) -> dict[str, Any]:
    """The record as TOML-ready data (tuples → lists, None left out): `parse(cls, dump(r), …) == r`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None or f.metadata.get("skip"):
            continue
        out[f.metadata.get("toml", f.name)] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dump(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def read_text_file(path: str | Path, what: str = "file") -> str:
    """A hand-written text file's contents: missing, a folder, a pipe or device, too large, binary or non-UTF-8
    is one clear error (checked before reading: a FIFO would block, `/dev/zero` would never end)."""
    path = Path(path)
    raw = read_small_file(path, what)
    if b"\x00" in raw[:8192]:
        raise CharframeError(f"{path}: a binary file, not a text {what}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CharframeError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def read_toml_file(path: str | Path, what: str, hint: str = "") -> tuple[dict[str, Any], Source]:
    """A hand-written TOML file's data and its `Source` (for line numbers): unreadable, binary, non-UTF-8 or
    invalid TOML is one `CharframeError` naming the file (`hint` says how to fix it)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    path = Path(path)
    text = read_text_file(path, what)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CharframeError(f"{path}: not valid TOML ({e}){hint}") from None
    return data, Source(str(path), text)
