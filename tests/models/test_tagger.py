"""Prompt adherence (models.tagger): a WD14 tagger run exactly as imgutils runs it, through a local Hugging Face
cache or a folder, never downloading; the expected tags of a prompt; bad files are one line each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charframe.errors import CharframeError
from charframe.models import tagger
from charframe.testing import tiny_tagger

wd14 = pytest.importorskip("imgutils.tagging.wd14", reason="dghs-imgutils is not installed")

COLOURS = {"green": (30, 200, 40), "white": (250, 250, 250), "dark": (10, 10, 20), "red": (220, 30, 30)}


def _pictures(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, colour in COLOURS.items():  # 48×64: imgutils pads it square on white
        Image.new("RGB", (48, 64), colour).save(folder / f"{name}.png")
        out.append(folder / f"{name}.png")
    rgba = Image.new("RGBA", (40, 40), (30, 200, 40, 0))
    rgba.paste((30, 200, 40, 255), (10, 10, 30, 30))
    rgba.save(folder / "transparent.png")
    return out + [folder / "transparent.png"]


def test_predictions_equal_imgutils_through_a_local_model_cache(hf_cache: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_tagger.write_hf_cache(hf_cache, "SwinV2_v3")
    for f in (wd14._get_wd14_model, wd14._get_wd14_labels):  # imgutils caches by model name: start afresh
        f.cache_clear()
    pictures = _pictures(tmp_path / "pics")
    t = tagger.Tagger(tagger.locate("SwinV2_v3"), cache=tmp_path / "cache")
    ours = t.predictions(pictures)
    theirs = np.stack([wd14.get_wd14_tags(str(p), model_name="SwinV2_v3", fmt="prediction") for p in pictures])
    np.testing.assert_array_equal(ours, theirs)
    general = [wd14.get_wd14_tags(str(p), model_name="SwinV2_v3")[1] for p in pictures]
    assert t.tags(pictures) == [set(g) for g in general]
    # the transparent one is a green square on white (imgutils pads and composes on white): forest, and bright
    assert [sorted(x - {"1girl"}) for x in t.tags(pictures)] == [["forest"], ["snow"], ["night"], ["red_hair"],
                                                                 ["forest", "snow"]]
    calls: list[Path] = []
    again = tagger.Tagger(t.model, cache=tmp_path / "cache")  # the cache: nothing is tagged twice
    monkeypatch.setattr(tagger.Tagger, "predict", lambda self, p: calls.append(p))
    np.testing.assert_array_equal(again.predictions(pictures), ours)
    assert calls == []
    for f in (wd14._get_wd14_model, wd14._get_wd14_labels):
        f.cache_clear()


def test_expected_tags_and_adherence() -> None:
    vocab = frozenset({"forest", "snow", "1girl", "red_hair", "from_side", "beach"})
    prompt = "krnk, 1girl, (red hair:1.2), [from side], <lora:krnk:0.8>, in a forest BREAK on a beach by the sea"
    assert tagger.expected_tags(prompt, vocab) == {"1girl", "red_hair", "from_side", "forest", "beach"}
    assert tagger.expected_tags("krnk, a cat", vocab) == set()
    found = [{"1girl", "forest"}, {"snow"}, {"1girl"}]
    expected = [{"1girl", "forest", "red_hair", "from_side"}, {"snow"}, set()]
    assert tagger.adherence(found, expected) == pytest.approx((0.5 + 1.0) / 2)  # the third has no tag to look for
    assert tagger.adherence(found, [set(), set(), set()]) is None


def test_bad_tagger_files_are_one_line(hf_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(CharframeError, match=r"models--deepghs--wd14_tagger_with_embeddings: the tagger \(\[score\] "
                                             r"tagger\) file SmilingWolf/wd-swinv2-tagger-v3/model.onnx is not in the "
                                             r"Hugging Face cache; download it once: huggingface-cli download"):
        tagger.locate("SwinV2_v3")
    with pytest.raises(CharframeError, match=r"'Swin' is not a WD14 tagger that imgutils knows \(.*SwinV2_v3"):
        tagger.locate("Swin")
    folder = tiny_tagger.write_folder(tmp_path / "t")
    (folder / "selected_tags.csv").unlink()
    with pytest.raises(CharframeError, match=r"t/selected_tags.csv: the tagger \(\[score\] tagger\) file "
                                             r"selected_tags.csv is not there"):
        tagger.locate(str(folder))
    (folder / "selected_tags.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(CharframeError, match=r"t/selected_tags.csv: not a tagger's selected_tags.csv"):
        tagger.Tagger(tagger.locate(str(folder)))
    folder = tiny_tagger.write_folder(tmp_path / "g")
    (folder / "model.onnx").write_bytes(b"garbage, not onnx" * 10)
    pictures = _pictures(tmp_path / "pics")
    with pytest.raises(CharframeError, match=r"g/model.onnx: not a usable ONNX model \(") as e:
        tagger.Tagger(tagger.locate(str(folder)), cache=tmp_path / "c").tags(pictures[:1])
    assert "\n" not in str(e.value)
    ok = tagger.Tagger(tagger.locate(str(tiny_tagger.write_folder(tmp_path / "ok"))), cache=tmp_path / "c")
    notes = tmp_path / "notes.png"
    notes.write_text("my notes", encoding="utf-8")
    with pytest.raises(CharframeError, match=r"notes.png"):
        ok.tags([notes])
