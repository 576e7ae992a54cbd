"""Containment: every path charframe makes from a user's string stays inside the project.

Keywords, classes, outfits, group members, preset labels, dataset and subset names become folder and file
names (`LoRAInput/4_krnk/krnk girl_f0512/`, `LoRAOutput/krnksf/`); `[paths]` of charframe.toml become
folders. A name like `girl/../../../x` would make export write outside the project, so every such string
passes one of the validators here, where it is read, with one message naming the file, the key and the fix:

- `name_problem` / `safe_name`: the string must be ONE file or folder name on every platform charframe runs
  on (no `/` or `\\`, not `.` or `..`, no character Windows refuses, no control character, no trailing dot
  or space, no device name such as `CON`, valid UTF-8);
- `contained`: `root / parts…` for a relative path written by the user (`[paths] input = "data/in"`),
  which must stay inside `root` (no absolute part, no `..` that climbs out);
- `outside` / `check_inside`: where a path REALLY goes, links followed (a subset folder that is a symlink
  to a folder elsewhere): the write guard of `util.files.confine_writes` asks these.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Iterable

from charframe.errors import CharframeError

#: characters that no file name may hold on Windows (/ and \ separate folders everywhere)
FORBIDDEN_CHARS = frozenset('<>:"/\\|?*')
#: device names Windows reserves in every folder (also with an extension: `nul.txt`)
RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                            *(f"LPT{i}" for i in range(1, 10))})


def name_problem(value: str) -> str | None:
    """Why `value` cannot be one file or folder name on Linux, macOS and Windows (None when it can)."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "is a relative folder step, not a name"
    bad = sorted({c for c in value if c in FORBIDDEN_CHARS or ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"holds {shown}" + (" (a folder separator)" if {"/", "\\"} & set(bad) else "")
    if value != value.rstrip(" ."):
        return "ends with a space or a dot (Windows drops them)"
    if value.split(".", 1)[0].rstrip(" ").upper() in RESERVED_NAMES:
        return "is a device name on Windows"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    return None


def safe_name(value: str, what: str, fix: str = "use letters, digits and spaces") -> str:
    """`value` when it can be one file or folder name; else one `CharframeError`: `<what>: <value> <why>; <fix>`.

    `what` says where the value came from (`Characters/krnk.toml:2: class`).
    """
    problem = name_problem(value) if isinstance(value, str) else "is not text"
    if problem:
        raise CharframeError(f"{what}: {_shown(value)} {problem}; it becomes part of file and folder names: {fix}")
    return value


def _shown(value: object) -> str:
    return ascii(value) if isinstance(value, str) and name_problem(value) == "is not valid UTF-8 text" else repr(value)


def relative_problem(value: str) -> str | None:
    """Why `value` is not a relative path that stays where it starts (None when it is): absolute, a drive,
    a `..` step, or a folder name `name_problem` refuses. `/` and `\\` both separate folders."""
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).drive or PureWindowsPath(value).root:
        return "is an absolute path"
    for part in value.replace("\\", "/").split("/"):
        if part == "..":
            return "climbs out with '..'"
        problem = name_problem(part) if part not in ("", ".") else None
        if problem:
            return f"is not a usable path ({part!r} {problem})"
    return None


def contained(root: str | os.PathLike, *parts: str, what: str = "path") -> Path:
    """`root / parts…` when every part is a relative path that stays inside `root` (`relative_problem`).

    Links are not followed here (the folders need not exist yet); `check_inside` checks where a path really
    goes. `what` names the source of `parts` in the message.
    """
    for part in parts:
        problem = relative_problem(part)
        if problem:
            raise CharframeError(f"{what}: {part!r} {problem}; give a path inside {root}")
    return Path(root).joinpath(*parts)


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def outside(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path | None:
    """The real location of `path` (links followed, as far as it exists) when it is inside none of `roots`
    (compared by their real locations too); None when it is inside one."""
    real = _real(path)
    for root in roots:
        r = _real(root)
        if real == r or r in real.parents:
            return None
    return real


def check_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike], what: str = "") -> Path:
    """`path` when it really lies inside one of `roots`; else one error naming the link that leads out."""
    roots = list(roots)
    real = outside(path, roots)
    if real is None:
        return Path(path)
    link = first_link(path, roots)
    via = f" (through the link {link})" if link is not None else ""
    raise CharframeError(
        f"{path}: {what + ' ' if what else ''}would be written at {real}{via}, outside the project "
        f"({', '.join(str(r) for r in roots[:1])}); charframe writes only inside the project: "
        f"replace the link with a real folder, or copy the files in")


def first_link(path: str | os.PathLike, roots: Iterable[str | os.PathLike] = ()) -> Path | None:
    """The first symbolic link on the way to `path` below one of `roots` (any, without roots), or None."""
    p = Path(os.path.abspath(path))
    tops = [Path(os.path.abspath(r)) for r in roots]
    for candidate in [*reversed(p.parents), p]:
        if tops and not any(t in candidate.parents for t in tops):
            continue
        if candidate.is_symlink():
            return candidate
    return None
