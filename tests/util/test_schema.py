"""One validation layer for hand-written TOML: types, ranges, unknown keys, the line of the problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.schema import Source, dump, limits, parse, read_text_file


@dataclass(frozen=True)
class Inner:
    weight: float = field(default=0.5, metadata=limits(min=0, max=2))


@dataclass(frozen=True)
class Rec:
    name: str
    replace: bool = False
    steps: int = field(default=10, metadata=limits(min=1))
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (512,)
    inner: Inner = Inner()
    units: tuple[Inner, ...] = ()
    table: dict[str, str] = field(default_factory=dict)
    maybe: int | None = None
    class_: str = field(default="girl", metadata={"toml": "class"})


TEXT = 'name = "x"\nreplace = true\n\n[inner]\nweight = 1.5\n\n[[units]]\nweight = 0.1\n'


def _err(data: dict, text: str = "") -> str:
    with pytest.raises(CharframeError) as e:
        parse(Rec, data, Source("f.toml", text))
    return str(e.value)


def test_parse_and_dump_round_trip() -> None:
    rec = parse(Rec, tomlio.loads(TEXT), Source("f.toml", TEXT))
    assert rec == Rec(name="x", replace=True, inner=Inner(1.5), units=(Inner(0.1),))
    again = parse(Rec, tomlio.loads(tomlio.dumps(dump(rec))), "g.toml")
    assert again == rec
    assert dump(Rec(name="y", class_="boy"))["class"] == "boy" and "maybe" not in dump(rec)


@pytest.mark.parametrize("data, text, message", [
    ({"name": "x", "replace": "no"}, 'name = "x"\nreplace = "no"\n', "f.toml:2: replace: expected true or false, got 'no'"),
    ({"name": "x", "steps": 0}, "", "f.toml: steps: expected an integer ≥ 1, got 0"),
    ({"name": "x", "steps": True}, "", "steps: expected an integer ≥ 1, got True"),
    ({"name": "x", "inner": {"weight": float("nan")}}, '[inner]\nweight = nan\n', "f.toml:2: inner.weight: expected a finite number from 0 to 2, got nan"),
    ({"name": "x", "inner": {"weight": float("inf")}}, "", "inner.weight: expected a finite number from 0 to 2, got inf"),
    ({"name": "x", "inner": {"weight": 1e300}}, "", "expected a finite number from 0 to 2, got 1e+300"),
    ({"name": "x", "mode": "c"}, "", "mode: expected one of 'a', 'b', got 'c'"),
    ({"name": "x", "sizes": [512, "big"]}, "", "sizes[1]: expected an integer, got 'big'"),
    ({"name": "x", "stpes": 3}, 'name = "x"\nstpes = 3\n', "f.toml:2: stpes: unknown key (did you mean 'steps'?)"),
    ({"name": "x", "innerz": {}}, 'name="x"\n[innerz]\n', "f.toml:2: innerz: unknown key (did you mean 'inner'?)"),
    ({"replace": True}, "", "f.toml: name: required key is missing"),
    ({"name": 3}, "", "name: expected a string, got 3"),
    ({"name": "x", "units": [{"wieght": 1}]}, "", "units[0].wieght: unknown key (did you mean 'weight'?)"),
])
def test_every_bad_value_is_one_message_naming_key_and_line(data: dict, text: str, message: str) -> None:
    assert message in _err(data, text)


def test_read_text_file_refuses_binary_non_utf8_folder_missing(tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b"\x00\x01\x02")
    (tmp_path / "latin.toml").write_bytes("name = 'caf\xe9'".encode("latin-1"))
    (tmp_path / "ok.toml").write_bytes("\ufeffname = 'x'".encode("utf-8"))
    assert read_text_file(tmp_path / "ok.toml") == "name = 'x'"
    for name, words in [("bin.toml", "binary"), ("latin.toml", "not UTF-8"), ("missing.toml", "no such"), (".", "is a folder")]:
        with pytest.raises(CharframeError, match=words):
            read_text_file(tmp_path / name)
