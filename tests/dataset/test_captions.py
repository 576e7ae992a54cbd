from pathlib import Path

import pytest

from charframe.dataset.captions import caption_for, default_rules, load_rules
from charframe.errors import CharframeError
from charframe.dataset.naming import ImageCode, parse_code

WORKED_EXAMPLE = (
    "krnk, white background, black background, simple background, from horizontal, from front, upper body, "
    "standing, straight standing, nude, completely nude, bare shoulders, nipples, collarbone, abs, ribs, "
    "looking at viewer, smile, open mouth, blush"
)


def spec_caption(kind: str, e: int, d: int, keywords: list[str]) -> str:
    """CONVENTIONS §3 written out literally, independent of the rule engine."""
    tags = list(keywords)
    tags += ["white background", "black background", "simple background"]
    tags.append({0: "from horizontal", 1: "from above", 2: "from below"}[e])
    if d in (0, 1, 7):
        tags.append("from front")
    elif d in (2, 6):
        tags.append("from side")
    else:
        tags.append("from behind")
    tags.append("upper body" if kind == "f" else "full body")
    tags += ["standing", "straight standing"]
    if kind == "f":
        tags += ["nude", "completely nude", "bare shoulders"]
        if d in (0, 1, 2, 6, 7):
            tags += ["nipples", "collarbone", "abs", "ribs"]
        if d in (3, 4, 5):
            tags += ["shoulder blades", "median furrow"]
        if (e == 1 and d in (0, 1, 2, 6, 7)) or (e == 2 and d in (0, 1, 7)):
            tags.append("navel")
    tags.append("looking at viewer" if d == 0 else "looking away")
    if d != 4:
        tags += ["smile", "open mouth", "blush"]
    return ", ".join(tags)


ALL_CODES = [f"{k}{e}{d}" for k in "fb" for e in range(3) for d in range(8)]


def test_there_are_48_codes() -> None:
    assert len(ALL_CODES) == 48 and len(set(ALL_CODES)) == 48


@pytest.mark.parametrize("code", ALL_CODES)
def test_golden_every_code(code: str) -> None:
    k, e, d = code[0], int(code[1]), int(code[2])
    assert caption_for(f"{code}.png", "krnk girl_f0512") == spec_caption(k, e, d, ["krnk"])
    folder = "kuronekomimi girl, shorthair, choker, ahoge_f0768"
    assert caption_for(Path(folder) / f"{code}-take2.webp") == spec_caption(
        k, e, d, ["kuronekomimi", "shorthair", "choker", "ahoge"]
    )
    assert caption_for(ImageCode(k, e, d)) == spec_caption(k, e, d, [])


def test_worked_example_character_for_character() -> None:
    assert caption_for(Path("krnk girl_f0512") / "f00.png") == WORKED_EXAMPLE
    assert caption_for("f00", "krnk girl_f0512") == WORKED_EXAMPLE
    assert caption_for("LoRAInput/4_krnk/krnk girl_f0512/f00.png", rules=load_rules()) == WORKED_EXAMPLE


def test_explain_names_the_rule_of_each_tag() -> None:
    code = parse_code("f12.png")
    assert code is not None
    pairs = default_rules().explain(code, "krnk girl_f0512")
    as_names = {tag: rule.name for tag, rule in pairs}
    assert as_names["krnk"] == "keywords"
    assert as_names["from above"] == "elevation-above"
    assert as_names["from side"] == "view-side"
    assert as_names["navel"] == "navel-from-above"
    assert ", ".join(t for t, _ in pairs) == caption_for("f12", "krnk girl_f0512")
    assert dict((r.name, r.describe()) for _, r in pairs)["navel-from-above"] == "kind f, elevation 1, azimuth 0,1,2,6,7"


def test_uncoded_name_is_an_error() -> None:
    with pytest.raises(CharframeError, match="cover.png"):
        caption_for("cover.png", "krnk_f0512")


def test_user_rules_in_charframe_toml_change_captions(tmp_path: Path) -> None:
    (tmp_path / "charframe.toml").write_text(
        """
[captions]
remove = ["expression"]

[[captions.rule]]            # edit an existing rule: only the given fields change
name = "background"
tags = ["black background", "simple background"]

[[captions.rule]]            # a new rule, placed after an existing one
name = "hair"
after = "keywords"
tags = ["long hair"]
rest = "longhair"

[[captions.rule]]            # a new rule at the end, on a folder-name condition
name = "outfit"
folder = "sf"
kind = "b"
tags = ["serafuku", "{class_tokens}"]
""",
        encoding="utf-8",
    )
    rules = load_rules(tmp_path)
    face = caption_for("f00-longhair.png", "krnk girl_f0512", rules)
    assert face.startswith("krnk, long hair, black background, simple background, from horizontal")
    assert "white background" not in face and "smile" not in face
    assert caption_for("f00.png", "krnk girl_f0512", rules).startswith("krnk, black background")
    body = caption_for("b04.png", "krnksf girl_b0768", rules)
    assert body.endswith("looking away, serafuku, krnksf girl")
    # the defaults are untouched
    assert caption_for("f00.png", "krnk girl_f0512") == WORKED_EXAMPLE


def test_rules_file_replaces_and_reorders(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        """
replace = true
[[rule]]
name = "kw"
tags = ["{keywords}"]
[[rule]]
name = "side"
azimuth = [2, 6]
elevation = "any"
tags = ["from side", "profile"]
[[rule]]
name = "first"
before = "kw"
tags = ["masterpiece"]
""",
        encoding="utf-8",
    )
    rules = load_rules(rules_file=f)
    assert rules.names == ("first", "kw", "side")
    assert caption_for("b22.png", "krnk girl_b0512", rules) == "masterpiece, krnk, from side, profile"
    assert caption_for("b20.png", "krnk girl_b0512", rules) == "masterpiece, krnk"


def test_rules_file_then_project_order_and_condition_edit(tmp_path: Path) -> None:
    (tmp_path / "charframe.toml").write_text('[[captions.rule]]\nname = "expression"\nazimuth = "any"\n')
    extra = tmp_path / "extra.toml"
    extra.write_text('[captions]\nremove = ["background"]\n')
    rules = load_rules(tmp_path, extra)
    assert "smile" in caption_for("f04.png", "x_f0512", rules)  # condition lifted by charframe.toml
    assert "background" not in caption_for("f04.png", "x_f0512", rules)


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[rule]]\nname = "x"\ntags = ["a"]\nazimuth = [9]\n', "azimuth"),
        ('[[rule]]\nname = "x"\ntags = ["a, b"]\n', "comma"),
        ('[[rule]]\nname = "x"\ntags = ["{kw}"]\n', "placeholder"),
        ('[[rule]]\nname = "x"\n', "needs tags"),
        ('[[rule]]\nname = "x"\ntags = ["a"]\ncolour = "red"\n', "colour"),
        ('remove = ["nope"]\n', "nope"),
        ('[[rule]]\nname = "x"\ntags = ["a"]\nafter = "nope"\n', "nope"),
        ('[[rule]]\nname = "x"\ntags = ["a"]\nfolder = "("\n', "regular expression"),
        ('frobnicate = 1\n', "frobnicate"),
    ],
)
def test_bad_rules_files_name_file_and_problem(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(CharframeError, match=message) as info:
        load_rules(rules_file=f)
    assert "bad.toml" in str(info.value)
