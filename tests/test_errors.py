"""Library errors name a parameter by its keyword; the CLI shows the flag the user typed."""

from __future__ import annotations

from charframe.cli import build_parser, flag_for
from charframe.errors import CharframeError


def test_param_placeholder_renders_keyword_or_flag() -> None:
    e = CharframeError("{param} must be 1..12 (got 40)", param="clip_skip")
    assert str(e) == "clip_skip must be 1..12 (got 40)"
    assert e.render("--clip-skip") == "--clip-skip must be 1..12 (got 40)"
    plain = CharframeError("a.png: not an image")
    assert str(plain) == plain.render() == "a.png: not an image"


def test_flag_for_finds_the_option_of_a_keyword_in_the_command_parser() -> None:
    parser = build_parser()
    assert flag_for(parser, "train", "clip_skip") == "--clip-skip"
    assert flag_for(parser, "train", "no_such_keyword") is None
    assert flag_for(parser, None, "verbose") == "--verbose"
