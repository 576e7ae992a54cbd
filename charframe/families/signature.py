"""Key/shape signatures: how a single-file checkpoint says what it is, before any tensor is read.

A signature is data (the generic table `data/models/architectures.toml` and each family's `[recognize]` /
`[[refuse]]` entries): it matches a key → shape map when every condition it gives holds — any key starts
with one of `prefixes`, every one of `requires` is a prefix of some key, none of `absent` is, and
`shape.key` exists with `shape.equals` along `shape.dim`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Signature:
    id: str
    looks_like: str
    hint: str
    #: the family this signature recognises (loadable), or None for a refusal
    family: str | None = None
    prefixes: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    shape_key: str | None = None
    shape_dim: int = 0
    shape_equals: int = 0

    @property
    def supported(self) -> bool:
        return self.family is not None

    def matches(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        def has(prefix: str) -> bool:
            return any(k.startswith(prefix) for k in shapes)

        if self.prefixes and not any(has(p) for p in self.prefixes):
            return False
        if not all(has(p) for p in self.requires) or any(has(p) for p in self.absent):
            return False
        if self.shape_key is not None:
            shape = shapes.get(self.shape_key)
            return shape is not None and len(shape) > self.shape_dim and shape[self.shape_dim] == self.shape_equals
        return bool(self.prefixes or self.requires)


def signature(entry: Mapping[str, Any], default_hint: str, family: str | None = None) -> Signature:
    """One TOML table (`id`, `looks_like`, `hint`, `prefixes`, `requires`, `absent`, `shape`) as a Signature."""
    shape = entry.get("shape", {})
    return Signature(
        id=entry["id"],
        looks_like=entry["looks_like"],
        hint=entry.get("hint", default_hint),
        family=family,
        prefixes=tuple(entry.get("prefixes", ())),
        requires=tuple(entry.get("requires", ())),
        absent=tuple(entry.get("absent", ())),
        shape_key=shape.get("key"),
        shape_dim=int(shape.get("dim", 0)),
        shape_equals=int(shape.get("equals", 0)),
    )
