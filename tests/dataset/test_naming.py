from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.dataset.naming import (
    ImageCode,
    SizeSuffix,
    is_image_name,
    parse_code,
    parse_dataset_name,
    parse_subset_name,
    require_code,
    subset_folder_name,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("f00.png", ImageCode("f", 0, 0, "")),
        ("f12-longhair.png", ImageCode("f", 1, 2, "-longhair")),
        ("b03_take2.png", ImageCode("b", 0, 3, "_take2")),
        ("b27.WEBP", ImageCode("b", 2, 7, "")),
        ("f12", ImageCode("f", 1, 2, "")),
        (Path("krnk girl_f0512") / "f04.jpeg", ImageCode("f", 0, 4, "")),
        ("f123.png", ImageCode("f", 1, 2, "3")),
    ],
)
def test_parse_code(name: object, expected: ImageCode) -> None:
    code = parse_code(name)  # type: ignore[arg-type]
    assert code == expected
    assert code is not None and str(code) == expected.code


@pytest.mark.parametrize("name", ["x00.png", "f30.png", "f08.png", "F00.png", "00f.png", "f0.png", "a_f00.png", ""])
def test_names_without_code(name: str) -> None:
    assert parse_code(name) is None


def test_require_code_explains_format() -> None:
    with pytest.raises(CharframeError, match=r"cover\.png.*\[fb\]\[0-2\]\[0-7\]"):
        require_code("cover.png")


def test_image_names() -> None:
    assert is_image_name("a.PNG") and is_image_name("a.jpg") and is_image_name("a.jpeg") and is_image_name("a.webp")
    assert not is_image_name("a.txt") and not is_image_name("a.toml") and not is_image_name("png")


@pytest.mark.parametrize(
    "folder, repeats, has, name, parts",
    [
        ("4_krnk", 4, True, "krnk", ("krnk",)),
        ("2_krnksf_krnk", 2, True, "krnksf_krnk", ("krnksf", "krnk")),
        ("1_krnksf_tyankps_krnk_tyank", 1, True, "krnksf_tyankps_krnk_tyank", ("krnksf", "tyankps", "krnk", "tyank")),
        ("10_krnk", 10, True, "krnk", ("krnk",)),
        ("krnk", 1, False, "krnk", ("krnk",)),
        ("v2_krnk", 1, False, "v2_krnk", ("v2", "krnk")),
        ("4krnk", 1, False, "4krnk", ("4krnk",)),
    ],
)
def test_parse_dataset_name(folder: str, repeats: int, has: bool, name: str, parts: tuple) -> None:
    d = parse_dataset_name(Path("LoRAInput") / folder)
    assert (d.folder, d.repeats, d.has_repeats, d.name, d.parts) == (folder, repeats, has, name, parts)


def test_zero_repeats_is_an_error() -> None:
    with pytest.raises(CharframeError, match="0_krnk.*1_krnk"):
        parse_dataset_name("0_krnk")


def test_subset_examples_from_conventions() -> None:
    s = parse_subset_name("kuronekomimi girl, shorthair, choker, ahoge_f0768")
    assert s.keywords == ("kuronekomimi", "shorthair", "choker", "ahoge")
    assert s.class_tokens == "kuronekomimi girl"
    assert s.size == SizeSuffix("f", 768)
    assert s.flip is None and s.flip_aug is True and s.is_reg is False
    k = parse_subset_name("krnk girl_f0512")
    assert (k.keywords, k.class_tokens, k.keyword_part) == (("krnk",), "krnk girl", "krnk girl")


@pytest.mark.parametrize(
    "folder, flip, flip_aug, is_reg, size",
    [
        ("krnk girl_flip_f0512", True, True, False, SizeSuffix("f", 512)),
        ("krnk girl_noflip_b1024", False, False, False, SizeSuffix("b", 1024)),
        ("krnk girl_f0512_noflip", False, False, False, SizeSuffix("f", 512)),
        ("krnk girl_reg_f0512", None, True, True, SizeSuffix("f", 512)),
        ("krnk girl", None, True, False, None),
        ("noflip_krnk", None, True, False, None),  # the keyword part is not a marker
        ("krnk_flipped", None, True, False, None),
    ],
)
def test_subset_markers(folder: str, flip: object, flip_aug: bool, is_reg: bool, size: object) -> None:
    s = parse_subset_name(folder)
    assert (s.flip, s.flip_aug, s.is_reg, s.size) == (flip, flip_aug, is_reg, size)


def test_contradicting_flip_markers() -> None:
    with pytest.raises(CharframeError, match="both _flip_ and _noflip_"):
        parse_subset_name("krnk_flip_noflip_f0512")


def test_keyword_edge_cases() -> None:
    assert parse_subset_name("krnk,long hair,  choker_f0512").keywords == ("krnk", "long hair", "choker")
    assert parse_subset_name("_f0512").keywords == ()
    assert parse_subset_name("黒猫 少女, 猫耳_f0512").keywords == ("黒猫", "猫耳")
    assert parse_subset_name("黒猫 少女, 猫耳_f0512").class_tokens == "黒猫 少女"


def test_subset_folder_name_round_trip() -> None:
    name = subset_folder_name("krnk girl", "f", 128)
    assert name == "krnk girl_f0128"
    assert parse_subset_name(name).size == SizeSuffix("f", 128)
    with pytest.raises(CharframeError):
        subset_folder_name("krnk", "x", 512)
