"""Prompt editing and alternation as WebUI schedules them (84 prompts recorded from WebUI's own prompt_parser,
tests/data/webui_prompt_schedules.json), applied per denoiser call in generation, each text encoded once; cond and
uncond of different lengths run as separate UNet calls (WebUI's default) or padded when asked; `AND` and bad weights
refused when the character file is read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from charframe.character import load_character
from charframe.errors import CharframeError
from charframe.generation import denoiser as denoiser_mod
from charframe.generation.conditioning import TextEncoder, conditioning
from charframe.generation.passes import PassSettings, Runner
from charframe.generation.prompt import encode_prompt
from charframe.generation.samplers import find_sampler
from charframe.models.controlnet import load_controlnet
from charframe.models.tiny import build_tiny_sd
from charframe.prompt_syntax import check_prompt, prompt_schedule

RECORDED = json.loads((Path(__file__).parents[1] / "data" / "webui_prompt_schedules.json").read_text("utf-8"))


def test_corpus_is_large_enough() -> None:
    prompts = RECORDED["prompts"]
    assert len(prompts) >= 50
    assert sum(len(p["s20"]) > 1 for p in prompts) >= 40  # most of them really schedule something


@pytest.mark.parametrize("key,args", [("s20", (20,)), ("s28", (28,)), ("s40", (40,)), ("hires_20_10", (20, 10)),
                                      ("hires_28_14", (28, 14))])
def test_schedules_equal_webuis(key: str, args: tuple) -> None:
    for case in RECORDED["prompts"]:
        assert [list(x) for x in prompt_schedule(case["prompt"], *args)] == case[key], case["prompt"]


@pytest.fixture(scope="module")
def sd():
    return build_tiny_sd(0)


@pytest.fixture(scope="module")
def controlnet(sd):
    return load_controlnet(None, dict(sd.unet.config))[0]


def _record_contexts(monkeypatch) -> list:
    seen: list = []
    real = denoiser_mod.CFGDenoiser._unet

    def spy(self, x, t, context):
        seen.append(context.clone())
        return real(self, x, t, context)

    monkeypatch.setattr(denoiser_mod.CFGDenoiser, "_unet", spy)
    return seen


def _run(sd, controlnet, prompt: str, negative: str, sampler: str, steps: int, *, hires: int = 0, pad: bool = False,
         encoder: TextEncoder | None = None):
    choice = find_sampler(sampler)
    runner = Runner(sd, [controlnet], choice)
    encode = encoder or TextEncoder(lambda text: encode_prompt(text, sd.tokenizer, sd.text_encoder, 1))
    runner.empty = encode("")
    conds = conditioning(prompt, negative, choice, steps, hires, encode)
    settings = PassSettings(steps, 7.0, (0.5,), (0.0,), (1.0,), 1.5 if hires else 1.0, 0.5, hires, pad)
    image = runner.image(conds, None, [Image.new("RGB", (64, 64), (128, 128, 128))], 3, settings)
    return runner, encode, image


@pytest.mark.parametrize("sampler,steps,expected", [
    ("Euler", 4, ["cat", "cat", "cat", "dog"]),                        # [(2, cat), (4, dog)]: calls 0-2 are ≤ 2
    ("Heun", 4, ["cat"] * 5 + ["dog"] * 2),                            # second order: 8 steps, 7 calls
    ("DPM++ 2M", 6, ["cat"] * 4 + ["dog"] * 2),
])
def test_each_call_uses_its_steps_conditioning(sd, controlnet, monkeypatch, sampler, steps, expected) -> None:
    seen = _record_contexts(monkeypatch)
    _, encode, _ = _run(sd, controlnet, "a [cat:dog:0.5]", "", sampler, steps)
    words = {"cat": encode("a cat"), "dog": encode("a dog")}
    assert len(seen) == len(expected)  # same lengths: cond and uncond in one batch per call
    for ctx, word in zip(seen, expected):
        assert torch.equal(ctx[:1], words[word]) and torch.equal(ctx[1:], encode(""))


def test_alternation_and_step_numbers(sd, controlnet, monkeypatch) -> None:
    seen = _record_contexts(monkeypatch)
    _, encode, _ = _run(sd, controlnet, "[cat|dog] ears", "[:blurry:2]", "Euler", 4)
    pos = ["cat ears", "cat ears", "dog ears", "cat ears"]  # WebUI: entries end at 1, 2, 3, 4; call k uses k ≤ end
    neg = ["", "", "", "blurry"]  # [(2, ""), (4, "blurry")]
    for ctx, p, n in zip(seen, pos, neg):
        assert torch.equal(ctx[:1], encode(p)) and torch.equal(ctx[1:], encode(n))


def test_hires_pass_conditioning_and_step_count(sd, controlnet, monkeypatch) -> None:
    """The hires pass runs exactly its 5 steps; `[cat:dog:0.5]` has switched before it, `[x:y:1.5]` switches half-way
    through it (WebUI: hires fractions run from 1 to 2; int(0.5 × 5) = 2: calls 0-2 see x)."""
    seen = _record_contexts(monkeypatch)
    runner, encode, image = _run(sd, controlnet, "[cat:dog:0.5] [x:y:1.5]", "", "Euler", 4, hires=5)
    assert image.size == (96, 96) and runner.last_unet_calls == [4, 5]
    hires = [ctx[:1] for ctx in seen[4:]]
    assert [torch.equal(c, encode("dog x")) for c in hires] == [True, True, True, False, False]
    assert all(torch.equal(c, encode("dog y")) for c in hires[3:])


def test_each_distinct_text_is_encoded_once(sd, controlnet) -> None:
    texts: list[str] = []

    def encode(text: str):
        texts.append(text)
        return encode_prompt(text, sd.tokenizer, sd.text_encoder, 1)

    encoder = TextEncoder(encode)
    for _ in range(2):  # two images of the same code
        _run(sd, controlnet, "[a|b] c, [d:e:0.5]", "lowres", "Euler a", 6, encoder=encoder)
    assert sorted(texts) == sorted(["", "a c, d", "b c, d", "a c, e", "b c, e", "lowres"])


def test_different_lengths_run_separately_unless_padded(sd, controlnet, monkeypatch) -> None:
    """WebUI's default (pad_cond_uncond off): a 2-chunk prompt and a 1-chunk negative go through the UNet one at a
    time; padded, the negative gets the empty prompt's chunk and both run as one batch."""
    long = " ".join(["girl"] * 80)
    seen = _record_contexts(monkeypatch)
    runner, _, plain = _run(sd, controlnet, long, "lowres", "Euler", 3)
    assert runner.last_unet_calls == [6] and not runner.last_padded
    assert [c.shape[1] for c in seen] == [154, 77] * 3
    seen.clear()
    runner, encode, padded = _run(sd, controlnet, long, "lowres", "Euler", 3, pad=True)
    assert runner.last_unet_calls == [3] and runner.last_padded
    assert torch.equal(seen[0][1:, 77:], encode(""))
    assert plain.tobytes() != padded.tobytes()  # padding changes the picture, as WebUI says


@pytest.mark.parametrize("text,message", [
    ("1girl AND 1boy", "'AND' (WebUI's composable prompts) is not supported"),
    ("(smile:1.2.3), cat ears", "weight '1.2.3' in ':1.2.3)' is not a number"),
    ("[(smile:1..2):frown:0.5]", "weight '1..2'"),
])
def test_bad_prompts_refused_with_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "Characters" / "krnk.toml"
    path.parent.mkdir()
    path.write_text(f'keyword = "krnk"\nprompt = "{text}"\n', encoding="utf-8")
    with pytest.raises(CharframeError, match=re.escape(message)) as err:
        load_character(path)
    assert str(err.value).startswith(f"{path}:2: prompt: ")
    with pytest.raises(CharframeError, match=re.escape(message)):
        check_prompt(text, "x")


def test_and_in_an_outfit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "krnk.toml"
    path.write_text('keyword = "krnk"\n[outfits]\nsf = "sailor uniform AND skirt"\n', encoding="utf-8")
    with pytest.raises(CharframeError, match=r"krnk.toml:3: outfits.sf: 'AND'"):
        load_character(path)
    check_prompt("cats and dogs, [a:b:0.5]", "x")  # lower-case 'and' is a word


def test_pad_conds_is_written_only_when_padding_happened(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from generation_helpers import make_project

    from charframe.generation.generate import generate_set
    from charframe.generation.pnginfo import parse_parameters, read_parameters

    written = {}
    for pad in ("false", "true"):
        root = tmp_path / pad
        ch = make_project(root, steps=1, extra=f"pad_conds = {pad}", codes=("f00",))
        text = ch.path.read_text("utf-8").replace('class = "girl"', 'class = "girl"\nnegative = "' + "bad " * 80 + '"')
        ch.path.write_text(text, encoding="utf-8")
        res = generate_set(load_character(ch.path), "f", codes=["f00"], candidates=1, progress=False, device="cpu")
        written[pad] = parse_parameters(read_parameters(res.written[0]))[2]
    assert "Pad conds" not in written["false"] and written["true"]["Pad conds"] == "True"
