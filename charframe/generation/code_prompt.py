"""The generation prompt of one template code (CONVENTIONS §9), from the rules in `data/prompt_rules.toml`.

`f12` for a character with fill "black" reads: character prompt, `(black background:1.3)`, `simple background`,
`upper body`, `(nude:1.4)`, `(from above:1.3)`, `from side`, `looking away`. The body set adds the outfit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from charframe.character import Character
from charframe.dataset.naming import AZIMUTHS, ELEVATIONS, KINDS, ImageCode
from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

RULES_FILE = DATA_DIR / "prompt_rules.toml"
FILLS = ("black", "white")
_ALLOWED = {"kind": KINDS, "elevation": ELEVATIONS, "azimuth": AZIMUTHS, "fill": FILLS}


@dataclass(frozen=True)
class PromptRule:
    name: str
    parts: tuple[str, ...]
    conditions: tuple[tuple[str, frozenset], ...] = ()

    def matches(self, values: dict[str, object]) -> bool:
        return all(values[key] in allowed for key, allowed in self.conditions)


@dataclass(frozen=True)
class PromptRules:
    rules: tuple[PromptRule, ...]
    light_hair: tuple[str, ...]


def _rule(table: dict, where: str) -> PromptRule:
    unknown = sorted(set(table) - {"name", "parts", *_ALLOWED})
    if unknown:
        raise CharframeError(f"{where}: unknown key(s) {', '.join(unknown)}; known: name, parts, {', '.join(_ALLOWED)}")
    conditions = []
    for key, allowed in _ALLOWED.items():
        if key in table:
            raw = table[key] if isinstance(table[key], list) else [table[key]]
            if not all(v in allowed for v in raw):
                raise CharframeError(f"{where}: {key} = {table[key]!r}; allowed: {', '.join(map(str, allowed))}")
            conditions.append((key, frozenset(raw)))
    parts = table.get("parts")
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise CharframeError(f"{where}: parts must be a list of strings")
    return PromptRule(str(table.get("name", "")), tuple(parts), tuple(conditions))


@functools.lru_cache(maxsize=4)
def load_prompt_rules(path: str = str(RULES_FILE)) -> PromptRules:
    """The rules file (the shipped one by default)."""
    data = tomlio.load(path)
    rules = tuple(_rule(t, f"{path}: rule {t.get('name', i)!r}") for i, t in enumerate(data.get("rule", []), 1))
    return PromptRules(rules, tuple(data.get("auto_fill", {}).get("light_hair", ())))


def background_fill(character: Character, rules: PromptRules | None = None) -> str:
    """"black" or "white": the character's fill, or for "auto" white when its prompt names light hair."""
    if character.fill != "auto":
        return character.fill
    text = character.prompt.lower()
    return "white" if any(w in text for w in (rules or load_prompt_rules()).light_hair) else "black"


def code_prompt(character: Character, code: ImageCode, outfit: str = "", rules: PromptRules | None = None) -> str:
    """The full positive prompt for one code of one character (and outfit, for the body set)."""
    rules = rules or load_prompt_rules()
    values = {"kind": code.kind, "elevation": code.elevation, "azimuth": code.azimuth,
              "fill": background_fill(character, rules)}
    fills = {"{character}": character.prompt.strip().strip(","),
             "{outfit}": character.outfit_prompt(outfit).strip().strip(",") if code.kind == "b" else ""}
    parts: list[str] = []
    for rule in rules.rules:
        if rule.matches(values):
            for part in rule.parts:
                part = fills.get(part, part)
                if part and part not in parts:
                    parts.append(part)
    return ", ".join(parts)
