"""Captions from names: a small rule engine over image codes and folder names (CONVENTIONS §3).

The rules are data (`charframe/data/caption_rules.toml`); a project's `charframe.toml` (`[captions]`)
or a `--rules FILE` edits them by rule name: replace fields of a rule, add rules at a position, remove
rules, or start from scratch. Every tag remembers the rule that produced it, so `charframe explain`
can show why a caption reads the way it does.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any, Iterable

from charframe.util import toml as tomlio
from charframe.errors import CharframeError
from charframe.dataset.naming import AZIMUTHS, ELEVATIONS, KINDS, ImageCode, parse_subset_name, require_code
from charframe.project import CaptionEdits, RuleEdit, load_project
from charframe.util.files import DATA_DIR
from charframe.util.schema import Source, parse

DEFAULT_RULES_FILE = DATA_DIR / "caption_rules.toml"
CONFIG_SECTION = "captions"

KEYWORDS = "{keywords}"
CLASS_TOKENS = "{class_tokens}"
PLACEHOLDERS = (KEYWORDS, CLASS_TOKENS)

_CONDITIONS: dict[str, tuple[type, tuple]] = {"kind": (str, KINDS), "elevation": (int, ELEVATIONS), "azimuth": (int, AZIMUTHS)}
_PATTERNS = ("folder", "rest")


@dataclass(frozen=True)
class Rule:
    """Tags added when every given condition holds (None = any value)."""

    name: str
    tags: tuple[str, ...]
    kind: frozenset[str] | None = None
    elevation: frozenset[int] | None = None
    azimuth: frozenset[int] | None = None
    folder: re.Pattern[str] | None = None
    rest: re.Pattern[str] | None = None
    source: str = field(default="", compare=False)  # the file that last defined or edited it

    def matches(self, code: ImageCode, folder: str) -> bool:
        return (
            (self.kind is None or code.kind in self.kind)
            and (self.elevation is None or code.elevation in self.elevation)
            and (self.azimuth is None or code.azimuth in self.azimuth)
            and (self.folder is None or self.folder.search(folder) is not None)
            and (self.rest is None or self.rest.search(code.rest) is not None)
        )

    def describe(self) -> str:
        """The conditions in words, e.g. `kind f, azimuth 3,4,5`."""
        parts = [f"{k} {','.join(str(v) for v in sorted(getattr(self, k)))}" for k in _CONDITIONS if getattr(self, k) is not None]
        parts += [f"{k} ~ /{getattr(self, k).pattern}/" for k in _PATTERNS if getattr(self, k) is not None]
        return ", ".join(parts) or "always"


@dataclass(frozen=True)
class RuleSet:
    """An ordered list of rules; the caption is their tags in order, each tag once."""

    rules: tuple[Rule, ...]
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def explain(self, code: ImageCode, folder: str = "") -> list[tuple[str, Rule]]:
        """(tag, rule that produced it) in caption order."""
        subset = parse_subset_name(folder) if folder else None
        out: list[tuple[str, Rule]] = []
        seen: set[str] = set()
        for rule in self.rules:
            if not rule.matches(code, folder):
                continue
            for tag in rule.tags:
                if tag == KEYWORDS:
                    expanded: Iterable[str] = subset.keywords if subset else ()
                elif tag == CLASS_TOKENS:
                    expanded = (subset.class_tokens,) if subset and subset.class_tokens else ()
                else:
                    expanded = (tag,)
                for t in expanded:
                    if t not in seen:
                        seen.add(t)
                        out.append((t, rule))
        return out

    def caption(self, code: ImageCode, folder: str = "") -> str:
        """The caption text (tags joined by ", "); memoised, since one folder repeats few codes."""
        key = (code if self._uses_rest else code.code, folder)
        text = self._cache.get(key)
        if text is None:
            text = ", ".join(tag for tag, _ in self.explain(code, folder))
            self._cache[key] = text
        return text

    @functools.cached_property
    def _uses_rest(self) -> bool:
        """Whether any rule reads the free rest of the name (else the cache ignores it)."""
        return any(r.rest is not None for r in self.rules)


def _values(raw: Any, key: str, where: str) -> frozenset | None:
    typ, allowed = _CONDITIONS[key]
    if raw is None or raw == "any":
        return None
    items = raw if isinstance(raw, tuple) else (raw,)
    if not all(isinstance(v, typ) and not isinstance(v, bool) and v in allowed for v in items):
        shown = list(raw) if isinstance(raw, tuple) else raw
        raise CharframeError(f"{where}: {key} = {shown!r}; allowed values: {', '.join(map(str, allowed))} (or \"any\")")
    return frozenset(items)


def _pattern(raw: str | None, key: str, where: str) -> re.Pattern[str] | None:
    if raw is None or raw == "any":
        return None
    try:
        return re.compile(raw)
    except re.error as e:
        raise CharframeError(f"{where}: {key} = {raw!r} is not a valid regular expression ({e})") from None


def _tags(raw: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not all(t.strip() for t in raw):
        raise CharframeError(f"{where}: tags must be a list of non-empty strings, e.g. tags = [\"smile\"]")
    for t in raw:
        if "," in t:
            raise CharframeError(f"{where}: tag {t!r} contains a comma; write separate tags")
        if ("{" in t or "}" in t) and t not in PLACEHOLDERS:
            raise CharframeError(f"{where}: unknown placeholder {t!r}; known: {', '.join(PLACEHOLDERS)}")
    return tuple(t.strip() for t in raw)


def _rule(edit: RuleEdit, where: str, base: Rule | None, source: str) -> Rule:
    """A rule from a `[[rule]]` edit; with `base`, only the given fields change (a user edit)."""
    fields: dict[str, Any] = {"name": edit.name, "source": source}
    if edit.tags is not None:
        fields["tags"] = _tags(edit.tags, where)
    elif base is None:
        raise CharframeError(f"{where}: a new rule needs tags = [...]")
    for key in _CONDITIONS:
        if getattr(edit, key) is not None:
            fields[key] = _values(getattr(edit, key), key, where)
    for key in _PATTERNS:
        if getattr(edit, key) is not None:
            fields[key] = _pattern(getattr(edit, key), key, where)
    return replace(base, **fields) if base is not None else Rule(**fields)


def apply_rule_edits(rules: Iterable[Rule], section: CaptionEdits, source: str) -> tuple[Rule, ...]:
    """Apply one validated rules section (`replace`, `remove`, `[[rule]]` edits) to `rules`; see the README."""
    out = [] if section.replace else list(rules)

    def index(name: str, why: str) -> int:
        for i, r in enumerate(out):
            if r.name == name:
                return i
        raise CharframeError(f"{source}: {why} names rule {name!r}, which does not exist; known: {', '.join(r.name for r in out)}")

    for name in section.remove:
        del out[index(name, "remove")]
    for edit in section.rule:
        where = f"{source}: rule {edit.name!r}"
        if not edit.name:
            raise CharframeError(f"{where}: every rule needs name = \"...\"")
        if edit.before is not None and edit.after is not None:
            raise CharframeError(f"{where}: give before or after, not both")
        existing = next((i for i, r in enumerate(out) if r.name == edit.name), None)
        rule = _rule(edit, where, out[existing] if existing is not None else None, source)
        if existing is not None:
            out[existing] = rule
            if edit.before is None and edit.after is None:
                continue
            del out[existing]
        if edit.before is not None:
            out.insert(index(edit.before, "before"), rule)
        elif edit.after is not None:
            out.insert(index(edit.after, "after") + 1, rule)
        else:
            out.append(rule)
    return tuple(out)


def read_rules_file(path: str | os.PathLike) -> CaptionEdits:
    """A rules file: the keys of `[captions]` at its top level, or under `[captions]` (so a project's
    charframe.toml can be passed as a rules file too); types and unknown keys checked with file:line."""
    data, text = tomlio.read(path, "rules file")
    nested = CONFIG_SECTION in data
    return parse(CaptionEdits, data[CONFIG_SECTION] if nested else data, Source(str(path), text),
                 section=(CONFIG_SECTION,) if nested else ())


@functools.lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped rule set (CONVENTIONS §3)."""
    section = replace(read_rules_file(DEFAULT_RULES_FILE), replace=True)
    return RuleSet(apply_rule_edits((), section, "default rules"))


def load_rules(project_root: str | os.PathLike | None = None, rules_file: str | os.PathLike | None = None) -> RuleSet:
    """Default rules, edited by `[captions]` of `<project_root>/charframe.toml`, then by `rules_file`."""
    rules = default_rules().rules
    edited = False
    if project_root is not None:
        config = load_project(project_root)
        if config.captions is not None:
            rules = apply_rule_edits(rules, config.captions, config.file)
            edited = True
    if rules_file is not None:
        rules = apply_rule_edits(rules, read_rules_file(rules_file), str(rules_file))
        edited = True
    return RuleSet(rules) if edited else default_rules()


def code_and_folder(image_path_or_code: str | os.PathLike | ImageCode, folder_name: str | None = None) -> tuple[ImageCode, str]:
    """Resolve the two inputs of a caption: an image path (its folder is the parent) or a bare code."""
    if isinstance(image_path_or_code, ImageCode):
        return image_path_or_code, folder_name or ""
    code = require_code(image_path_or_code)
    if folder_name is None:
        folder_name = PurePath(os.fspath(image_path_or_code)).parent.name
    return code, folder_name


def caption_for(image_path_or_code: str | os.PathLike | ImageCode, folder_name: str | None = None, rules: RuleSet | None = None) -> str:
    """The caption of one image: `caption_for("krnk girl_f0512/f00.png")` or `caption_for("f00", "krnk girl_f0512")`."""
    code, folder = code_and_folder(image_path_or_code, folder_name)
    return (rules or default_rules()).caption(code, folder)
