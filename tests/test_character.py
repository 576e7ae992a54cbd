"""The character file: defaults from CONVENTIONS §5/6/9, validation naming file/line/key, TOML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from charframe.character import Character, ControlUnit, character_toml, find_characters, load_character
from charframe.errors import CharframeError

KRNK = """keyword = "krnk"
class = "girl"
prompt = "1girl, solo, short black hair, cat ears"
fill = "black"

[outfits]
sf = "sailor uniform"

[generation]
steps = 20

[[generation.controlnet]]
map = "softedge"
model = "LoRAInput/cn.pth"
weight = 0.6
"""


def _write(root: Path, text: str, name: str = "krnk.toml") -> Path:
    path = root / "Characters" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_names_and_round_trip(tmp_path: Path) -> None:
    c = load_character(_write(tmp_path, KRNK))
    assert (c.keyword, c.class_, c.fill, c.azimuths) == ("krnk", "girl", "black", (0, 1, 2, 3, 4))
    assert c.root == tmp_path.absolute()
    assert c.generation.steps == 20 and c.generation.cfg == 10.0 and c.generation.sampler == "DPM++ 2M Karras"
    assert c.generation.controlnet == (ControlUnit(map="softedge", model="LoRAInput/cn.pth", weight=0.6, start=0.0, end=0.3),)
    assert c.resolve(c.generation.controlnet[0].model) == tmp_path.absolute() / "LoRAInput" / "cn.pth"
    assert c.resolve(c.generation.model) is None  # "" → the tiny demo model
    assert (c.training.face.steps, c.training.body.steps, c.training.group.steps) == (1000, 1200, 1600)
    assert (c.training.face.preset, c.training.body.preset) == ("FACE", "BODY")
    assert c.face_dataset() == "4_krnk" and c.body_dataset("sf") == "2_krnksf_krnk"
    assert c.subset("f", 512) == "krnk girl_f0512" and c.subset("b", 768, "sf") == "krnksf girl_b0768"
    assert c.set_name("f") == "face" and c.set_name("b", "sf") == "body-sf"
    assert c.work_dir("body-sf") == tmp_path.absolute() / "LoRAWork" / "krnk" / "body-sf"
    again = load_character(_write(tmp_path, character_toml(c), "again.toml"))
    assert again == c
    _write(tmp_path, "[[member]]\ncharacter = 'krnk'\n", "pair.group.toml")
    assert find_characters(tmp_path) == [tmp_path / "Characters" / "again.toml", tmp_path / "Characters" / "krnk.toml"]
    with pytest.raises(CharframeError, match="no outfit 'ps'.*known: sf"):
        c.body_dataset("ps")


@pytest.mark.parametrize("edit, message", [
    (("fill = \"black\"", "fill = \"grey\""), "krnk.toml:4: fill: expected one of 'black', 'white', 'auto', got 'grey'"),
    (("steps = 20", "steps = 0"), "krnk.toml:10: generation.steps: expected an integer from 1 to 500, got 0"),
    (("weight = 0.6", "weight = nan"), "krnk.toml:15: generation.controlnet[0].weight: expected a finite number from 0 to 2, got nan"),
    (("[outfits]", "[outfitz]"), "krnk.toml:6: outfitz: unknown key (did you mean 'outfits'?)"),
    (("keyword = \"krnk\"", "keyword = \"kr nk\""), "krnk.toml:1: keyword: must be letters and digits only"),
    (("sf = ", '"s/f" = '), "krnk.toml:7: outfits.s/f: outfit names must be letters and digits only"),
    (("weight = 0.6", "weight = 0.6\nstart = 0.5\nend = 0.2"), "krnk.toml:12: generation.controlnet: start (0.5) must be below end (0.2)"),
    (("steps = 20", "steps = [20"), "krnk.toml: not valid TOML"),
])
def test_a_bad_file_gets_one_message_naming_key_and_line(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = _write(tmp_path, KRNK.replace(*edit))
    with pytest.raises(CharframeError) as e:
        load_character(path)
    assert message in str(e.value)


def test_asymmetric_character_has_eight_azimuths() -> None:
    assert Character(keyword="x", asymmetric=True).azimuths == tuple(range(8))


def test_a_partial_stage_recipe_keeps_the_stage_defaults(tmp_path) -> None:
    """`[training.body]` with only `steps` keeps the body stage's BODY preset (issue 19, point 8)."""
    from charframe.character import StageRecipe, load_character

    path = tmp_path / "Characters" / "krnk.toml"
    path.parent.mkdir()
    path.write_text('keyword = "krnk"\n[training.body]\nsteps = 20\n[training.group]\ndim = 64\n')
    t = load_character(path).training
    assert t.body == StageRecipe(steps=20, preset="BODY")
    assert t.group == StageRecipe(steps=1600, preset="BODY", dim=64)
    assert t.face == StageRecipe()


@pytest.mark.parametrize("value, message", [
    ("0", r"training.face.save_every: expected an integer from 1 to 1000000, got 0"),
    ("20", r"training.face.save_every: 20 is more than the 10 steps: no checkpoint would be saved before the last "
           r"step; use a smaller number, or leave it out"),
])
def test_save_every_outside_the_steps_is_one_line(tmp_path, value: str, message: str) -> None:
    """Issue 22: a checkpoint interval of 0 or over the stage's steps is one line naming file, line and key."""
    path = tmp_path / "Characters" / "a.toml"
    path.parent.mkdir()
    path.write_text(f'keyword = "a"\n[training.face]\nsteps = 10\nsave_every = {value}\n', encoding="utf-8")
    with pytest.raises(CharframeError, match=r"a.toml:4: " + message) as e:
        load_character(path)
    assert "\n" not in str(e.value)
    path.write_text('keyword = "a"\n[training.face]\nsteps = 10\nsave_every = 5\n', encoding="utf-8")
    assert load_character(path).training.face.save_every == 5


@pytest.mark.parametrize("content, message", [
    (None, r"reference: 'refs/a.png': no such picture \("),
    (b"these are my notes", r"reference: 'refs/a.png': not a readable PNG, JPEG or WebP picture \(.*refs/a.png\); "
                            r"replace it with a picture of the character"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 4, r"reference: 'refs/a.png': not a readable PNG, JPEG or WebP picture"),
])
def test_a_reference_that_is_not_a_picture_is_one_line(tmp_path, content, message) -> None:
    """Issue 22: the character file's `reference` pictures are checked when it is loaded (the header only)."""
    path = tmp_path / "Characters" / "a.toml"
    path.parent.mkdir()
    path.write_text('keyword = "a"\nreference = ["refs/a.png"]\n', encoding="utf-8")
    (tmp_path / "refs").mkdir()
    if content is not None:
        (tmp_path / "refs" / "a.png").write_bytes(content)
    with pytest.raises(CharframeError, match=r"a.toml:2: " + message) as e:
        load_character(path)
    assert "\n" not in str(e.value)
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 60, 60)).save(tmp_path / "refs" / "a.png")
    assert load_character(path).reference == ("refs/a.png",)
