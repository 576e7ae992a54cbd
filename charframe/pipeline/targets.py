"""What the character and group files of a project claim on disk, and the refusal of two files claiming one thing.

Every target writes into folders named after it: a character file `krnk` (outfits `sf`) into `LoRAWork/krnk/`,
`LoRAOutput/krnk/` and `LoRAOutput/krnksf/`; a group file `pair.group.toml` into `LoRAWork/pair/` and
`LoRAOutput/<member outputs joined>/`. Two files that claim the same folder would overwrite each other's work
under two different run locks, so they are refused before anything runs, naming both files:

- two character files with the same keyword;
- a keyword equal to another character's keyword + outfit (`demosf` next to `demo` + outfit `sf`);
- two groups with the same members and outfits (one output);
- a group file named like a character's keyword (one `LoRAWork/<name>/pipeline/`, one lock for two targets).

`check_targets` is called by `runner.run_target` and `runner.rerun` (and the per-character commands through
`character_session`) before any step runs. It reads every character and group file of the project: the
answer is cached per set of file stats, so `rerun --all` over fifty characters reads them once.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from charframe.character import CHARACTERS_DIR, Character, load_character
from charframe.errors import CharframeError
from charframe.pipeline.lock import run_lock
from charframe.pipeline.stages import GROUP_SUFFIX, group_output, load_group, state_dir
from charframe.project import write_roots
from charframe.util.files import confine_writes


@dataclass(frozen=True)
class Claim:
    """One folder name a file claims: `kind` "work" (LoRAWork/<name>) or "output" (LoRAOutput/<name>)."""

    kind: str
    name: str
    file: Path
    how: str  # "keyword krnk", "keyword demo + outfit sf", "members krnk sf, tyank kps", "group name krnk"


@dataclass(frozen=True)
class Collision:
    """Two (or more) files claiming the same folder; `message` says which, what and how to fix it."""

    files: tuple[Path, ...]
    message: str

    def __str__(self) -> str:
        return self.message


_WHERE = {"work": "LoRAWork/{}", "output": "LoRAOutput/{}"}


def _fix(a: Claim, b: Claim) -> str:
    groups = [c.file.name.endswith(GROUP_SUFFIX) for c in (a, b)]
    if all(groups):
        return "remove one of the group files (or change its members)"
    if any(groups):
        return "rename the group file or the keyword"
    return "rename a keyword or an outfit"


def project_of(path: Path) -> Path:
    """The project root of a character or group file: the folder above `Characters/` (else the file's folder)."""
    parent = Path(path).absolute().parent
    return parent.parent if parent.name == CHARACTERS_DIR else parent


def character_claims(c: Character, file: Path) -> list[Claim]:
    return ([Claim("work", c.keyword, file, f"keyword {c.keyword}"), Claim("output", c.keyword, file, f"keyword {c.keyword}")]
            + [Claim("output", c.keyword + o, file, f"keyword {c.keyword} + outfit {o}") for o in c.outfits])


def _claims(files: tuple[Path, ...]) -> tuple[list[Claim], dict[Path, tuple[Path, ...]]]:
    """Every claim of `files` (character and group files; a file that does not read is left to its own run to
    report), and the member files of each group."""
    claims: list[Claim] = []
    members: dict[Path, tuple[Path, ...]] = {}
    for file in files:
        try:
            if file.name.endswith(GROUP_SUFFIX):
                g = load_group(file)
                members[file] = tuple(c.path for c, _ in g.members if c.path is not None)
                who = ", ".join(f"{c.keyword} {o}" for c, o in g.members)
                claims += [Claim("work", g.name, file, f"group name {g.name}"),
                           Claim("output", group_output(g.members), file, f"members {who}")]
            else:
                claims += character_claims(load_character(file), file)
        except CharframeError:
            continue
    return claims, members


def collisions_of(claims: Sequence[Claim]) -> list[Collision]:
    """One `Collision` per pair of files (in file order) that claim the same folder name, all its folders listed."""
    by_name: dict[tuple[str, str], list[Claim]] = {}
    for claim in claims:
        by_name.setdefault((claim.kind, claim.name), []).append(claim)
    pairs: dict[tuple[Path, Path], list[tuple[Claim, Claim]]] = {}
    for same in by_name.values():
        for i, a in enumerate(same):
            for b in same[i + 1:]:
                if a.file != b.file:
                    key = (a.file, b.file) if str(a.file) <= str(b.file) else (b.file, a.file)
                    pairs.setdefault(key, []).append((a, b) if key[0] == a.file else (b, a))
    out = []
    for (fa, fb), found in pairs.items():
        a, b = found[0]
        where = " and ".join(dict.fromkeys(_WHERE[x.kind].format(x.name) for x, _ in found))
        out.append(Collision((fa, fb), f"{fa} ({a.how}) and {fb} ({b.how}) both make {where}; "
                                       f"{_fix(a, b)} so that each has its own"))
    return out


@functools.lru_cache(maxsize=8)
def _cached(stats: tuple[tuple[str, int, int], ...]) -> tuple[tuple[Collision, ...], tuple[tuple[Path, tuple[Path, ...]], ...]]:
    claims, members = _claims(tuple(Path(p) for p, _, _ in stats))
    return tuple(collisions_of(claims)), tuple(members.items())


def _stats(root: Path, extra: Sequence[Path] = ()) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime_ns) of every character and group file of the project (one folder scan; `extra` files
    too): the cache key of `_cached`, so an edit, a new or a removed file is seen and nothing else is read."""
    found: dict[str, tuple[str, int, int]] = {}
    folder = os.path.join(os.path.abspath(root), CHARACTERS_DIR)
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(".toml") and entry.is_file():
                    st = entry.stat()
                    found[entry.path] = (entry.path, st.st_size, st.st_mtime_ns)
    except OSError:
        pass  # no Characters/ folder: only the named files
    for p in extra:
        key = os.path.abspath(p)
        if key not in found:
            try:
                st = os.stat(key)
            except OSError:
                continue
            found[key] = (key, st.st_size, st.st_mtime_ns)
    return tuple(sorted(found.values()))


def output_collisions(root: str | os.PathLike, extra: Sequence[Path] = ()) -> list[Collision]:
    """Every collision among the character and group files of the project at `root` (and `extra` files)."""
    return list(_cached(_stats(Path(root), extra))[0])


def check_targets(targets: Sequence[str | os.PathLike]) -> None:
    """Refuse, before anything runs, when a target (or a member of a target group) shares a folder with another
    file: one `CharframeError`, a line per collision, each naming both files."""
    problems: list[str] = []
    by_root: dict[Path, list[Path]] = {}
    for t in targets:
        by_root.setdefault(project_of(Path(t)), []).append(Path(t).absolute())
    for root, mine in by_root.items():
        collisions, members = _cached(_stats(root, mine))
        involved = set(mine) | {m for t in mine for m in dict(members).get(t, ())}
        problems += [c.message for c in collisions if involved & set(c.files) and c.message not in problems]
    if problems:
        raise CharframeError("\n".join(problems))


@contextlib.contextmanager
def character_session(character: Character) -> Iterator[None]:
    """What `charframe run` holds around a character's steps, for the standalone generate/clean/pick/export: no
    collision with another file, every write inside the project, and the character's run lock (so a `run` of
    it, or of a group it is in, and a standalone command never write the same files at once)."""
    if character.path is not None:
        check_targets([character.path])
    with confine_writes(write_roots(character.root)), \
            run_lock(state_dir(character.root, character.keyword), character.keyword):
        yield
