"""A1111 (WebUI) prompt syntax as text: emphasis weights, prompt editing and alternation, checked early.

Pure text, no models, so the character file can be checked with it before anything loads (a bad weight such as
`(a:1.2.3)` or an `AND` is one clear line naming the file, not an error after the models are up).

- `parse_attention`: `(text)` ×1.1, `[text]` ÷1.1, `(text:1.3)` ×1.3 (nesting multiplies), `\\(` `\\)` `\\[` `\\]`
  `\\\\` literal, unbalanced brackets close at the end, `BREAK` its own fragment, `<lora:…>` tags dropped.
- `prompt_schedule`: prompt editing `[a:b:when]` (`[a::when]`, `[:b:when]`, `[b:when]`) and alternation `[a|b]`
  expanded into the texts WebUI conditions each sampling step on, with WebUI's rules: a `when` with a decimal
  point is a fraction of the steps, without one a step number; alternation switches every step; in the hires
  pass fractions run from 1 to 2 and step numbers continue after the first pass. Text that is not valid editing
  syntax stays as it is (as in WebUI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from charframe.errors import CharframeError

ROUND, SQUARE = 1.1, 1 / 1.1
BREAK = -1.0  # the weight that marks a BREAK fragment

_ATTENTION = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_EXTRA_NETWORK = re.compile(r"<[^:<>]+:[^<>]+>")
_AND = re.compile(r"\bAND\b")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_PLAIN_STOP = set("[]():|")


def parse_attention(text: str) -> list[tuple[str, float]]:
    """(fragment, weight) pairs, neighbours of equal weight merged; BREAK gives ("BREAK", -1)."""
    res: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _ATTENTION.finditer(_EXTRA_NETWORK.sub("", text)):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:], 1.0])
        elif tok == "(":
            round_open.append(len(res))
        elif tok == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:
                raise CharframeError(f"weight {weight!r} in {tok.strip()!r} is not a number; write it like "
                                     "(text:1.2)") from None
            multiply(round_open.pop(), factor)
        elif tok == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif tok == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(tok)):
                if i > 0:
                    res.append(["BREAK", BREAK])
                res.append([part, 1.0])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(t, w) for t, w in res]


# ---------------------------------------------------------------- prompt editing / alternation
@dataclass
class _Edit:
    before: list[Node] | None
    after: list[Node]
    number: str
    when: int = 0


@dataclass
class _Alt:
    options: list[list[Node]]


Node = Union[str, _Edit, _Alt]


class _Fail(Exception):
    pass


class _Parser:
    """Recursive descent over WebUI's editing grammar: nested constructs must be complete; at the top level a
    bracket, parenthesis or colon that starts no complete construct is literal text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def prompt(self, i: int) -> tuple[list[Node], int]:
        """Plain text and complete constructs from i up to one of `] ) : |` or the end."""
        out: list[Node] = []
        n = len(self.text)
        while i < n:
            c = self.text[i]
            if c == "\\":
                if i + 1 >= n:
                    raise _Fail
                out.append(self.text[i:i + 2])
                i += 2
            elif c in "([":
                node, i = self.construct(i)
                out.extend(node)
            elif c in _PLAIN_STOP:
                break
            else:
                j = i
                while j < n and self.text[j] not in _PLAIN_STOP and self.text[j] != "\\":
                    j += 1
                out.append(self.text[i:j])
                i = j
        return out, i

    def number_tail(self, i: int) -> tuple[str, int] | None:
        """`[ws] NUMBER [ws] ]` from i, or None."""
        j = i
        while j < len(self.text) and self.text[j].isspace():
            j += 1
        m = _NUMBER.match(self.text, j)
        if not m:
            return None
        k = m.end()
        while k < len(self.text) and self.text[k].isspace():
            k += 1
        return (m.group(0), k + 1) if k < len(self.text) and self.text[k] == "]" else None

    def construct(self, i: int) -> tuple[list[Node], int]:
        """One complete `(…)`, `(…:…)`, `[…]`, `[…:…:N]`, `[…:N]` or `[…|…]` at i."""
        opening = self.text[i]
        first, j = self.prompt(i + 1)
        stop = self.text[j] if j < len(self.text) else ""
        if opening == "(":
            if stop == ")":
                return ["(", *first, ")"], j + 1
            if stop == ":":
                second, k = self.prompt(j + 1)
                if k < len(self.text) and self.text[k] == ")":
                    return ["(", *first, ":", *second, ")"], k + 1
            raise _Fail
        if stop == "]":
            return ["[", *first, "]"], j + 1
        if stop == "|":
            options = [first]
            while j < len(self.text) and self.text[j] == "|":
                option, j = self.prompt(j + 1)
                options.append(option)
            if j < len(self.text) and self.text[j] == "]":
                return [_Alt(options)], j + 1
            raise _Fail
        if stop == ":":
            tail = self.number_tail(j + 1)
            if tail is not None:
                return [_Edit(None, first, tail[0])], tail[1]
            second, k = self.prompt(j + 1)
            if k < len(self.text) and self.text[k] == ":":
                tail = self.number_tail(k + 1)
                if tail is not None:
                    return [_Edit(first, second, tail[0])], tail[1]
        raise _Fail

    def start(self) -> list[Node]:
        out: list[Node] = []
        i, n = 0, len(self.text)
        while i < n:
            c = self.text[i]
            if c == "|":
                raise _Fail
            if c in "([":
                try:
                    node, i = self.construct(i)
                except _Fail:
                    node, i = [c], i + 1
                out.extend(node)
            elif c in "]):":
                out.append(c)
                i += 1
            else:
                j = i
                while j < n and (self.text[j] not in _PLAIN_STOP):
                    j += 2 if self.text[j] == "\\" else 1
                if j > n:
                    raise _Fail  # a lone backslash at the end
                out.append(self.text[i:j])
                i = j
        return out


def _walk(nodes: list[Node]):
    for node in nodes:
        if isinstance(node, _Edit):
            yield node
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alt):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes: list[Node], step: int, before: bool | None = None) -> str:
    """The text at `step`; with `before` set, every edit takes that side (used to check each branch's text)."""
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Edit):
            first = step <= node.when if before is None else before
            parts.append(_render(node.before or [] if first else node.after, step, before))
        else:
            parts.append(_render(node.options[(step - 1) % len(node.options)], step, before))
    return "".join(parts)


def prompt_schedule(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
    """[(last step, text), …] the way WebUI's `get_learned_conditioning_prompt_schedules` gives it: the text to
    condition on up to and including each listed step. `steps` = the first pass's steps (doubled for second-order
    samplers, as WebUI counts them); with `hires_steps`, the schedule of the hires pass that follows it."""
    if hires_steps is None:
        int_offset, frac_offset, total = 0, 0.0, steps
    else:
        int_offset, frac_offset, total = steps, 1.0, hires_steps
    try:
        tree = _Parser(prompt).start()
    except _Fail:
        return [(total, prompt)]
    marks = {total}
    for node in _walk(tree):
        if isinstance(node, _Edit):
            v = float(node.number)
            v = (v - frac_offset) * total if "." in node.number else v - int_offset
            node.when = min(total, int(v))
            if node.when >= 1:
                marks.add(node.when)
        else:
            marks.update(range(1, total + 1))
    return [(t, _render(tree, t)) for t in sorted(marks)]


def check_prompt(text: str, where: str) -> None:
    """Refuse what charframe cannot mean the way WebUI does: `AND` (composable diffusion) and a weight that is not
    a number, in any step's text. `where` names the setting ("Characters/krnk.toml: prompt")."""
    if _AND.search(text):
        raise CharframeError(f"{where}: 'AND' (WebUI's composable prompts) is not supported by charframe; join the "
                             "parts with a comma instead, or write 'and' in lower case if you meant the word")
    try:
        tree = _Parser(text).start()
    except _Fail:
        tree = [text]
    longest = max((len(n.options) for n in _walk(tree) if isinstance(n, _Alt)), default=1)
    texts = {_render(tree, step, before) for before in (True, False) for step in range(1, longest + 1)}
    for step_text in sorted(texts):
        try:
            parse_attention(step_text)
        except CharframeError as exc:
            raise CharframeError(f"{where}: {exc}") from None
