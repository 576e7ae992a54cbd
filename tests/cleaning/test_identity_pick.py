"""Identity (issue 22): CCIP scores equal imgutils' on the same files, an off-model candidate is rejected even with
the best pose, reference pictures, retries with new seeds, and bad model or reference files as one line."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from charframe.character import load_character
from charframe.cleaning.clean import clean_set
from charframe.cleaning.images import candidates, read_image, write_png
from charframe.cleaning.pick import draw_picked_sheet, pick_outcome, pick_set, read_selection
from charframe.errors import CharframeError
from charframe.models import ccip
from charframe.testing import tiny_ccip
from charframe.testing.figures import compose_figure, figure_mask, make_project

imgutils_ccip = pytest.importorskip("imgutils.metrics.ccip", reason="dghs-imgutils is not installed")

RED = (200, 60, 60)


def _pictures(folder: Path) -> list[Path]:
    """Figures in two hair colours, one RGBA with transparency (imgutils composes it over white)."""
    out = []
    for i, (hair, shift) in enumerate([((30, 25, 35), 0.0), ((30, 25, 35), 0.1), (RED, 0.0), (RED, -0.1)]):
        cover = figure_mask((96, 80), shift=(shift, 0.0))
        out.append(write_png(folder / f"p{i}.png", compose_figure(cover, hair=hair, seed=i)) and folder / f"p{i}.png")
    rgba = np.dstack([compose_figure(figure_mask((64, 64)), seed=9), (figure_mask((64, 64)) * 255).astype(np.uint8)])
    write_png(folder / "transparent.png", rgba)
    return out + [folder / "transparent.png"]


@pytest.mark.parametrize("kind", ["histogram", "random"])
def test_scores_equal_imgutils_through_a_local_model_cache(kind: str, hf_cache: Path, tmp_path: Path) -> None:
    name = f"tiny-{kind}-{uuid.uuid4().hex[:8]}"  # imgutils caches sessions by model name: one name per test
    tiny_ccip.write_hf_cache(hf_cache, name, kind, threshold=0.125)
    pictures = _pictures(tmp_path / "pics")
    model = ccip.locate(name)
    assert model.threshold == 0.125 == imgutils_ccip.ccip_default_threshold(name)
    scorer = ccip.Scorer(model, cache=tmp_path / "features")
    ours = scorer.features(pictures)
    theirs = imgutils_ccip.ccip_batch_extract_features([str(p) for p in pictures], model=name)
    assert ours.shape == theirs.shape == (5, 768)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(scorer.differences(ours), imgutils_ccip.ccip_batch_differences(list(theirs), model=name))
    assert scorer.differences(ours[:1], ours[2:3])[0, 0] == pytest.approx(
        imgutils_ccip.ccip_difference(str(pictures[0]), str(pictures[2]), model=name), abs=1e-6)
    # the cache: a second scorer computes nothing and gives the same features
    again = ccip.Scorer(model, cache=tmp_path / "features")
    np.testing.assert_array_equal(again.features(pictures), ours)
    assert again.computed == 0 and scorer.computed == 5


def _identity_project(tmp_path: Path, *, threshold: float = 0.1, extra: str = "", codes=("f00", "f02", "f12")) -> Path:
    char = make_project(tmp_path, codes, candidates=3, fill="black", character_extra=extra)
    tiny_ccip.write_folder(tmp_path / "models" / "ccip-tiny", "histogram", threshold)
    (tmp_path / "charframe.toml").write_text('[identity]\nmodel = "models/ccip-tiny"\n', encoding="utf-8")
    return char


def _recolour(root: Path, code: str, i: int, hair=RED) -> None:
    """Candidate i of `code` drawn again with another hair colour, in exactly the same pose."""
    from charframe.testing.figures import _POSES

    shift, scale = _POSES.get(code, ((0.0, 0.0), 1.0))
    off = 0.0 if i == 1 else 0.09 * (i - 1)
    cover = figure_mask((96, 96), shift=(shift[0] + off, shift[1]), scale=scale * (1 + 0.1 * abs(i - 1)))
    write_png(root / "LoRAWork" / "krnk" / "face" / "raw" / f"{code}-{i}.png", compose_figure(cover, hair=hair, seed=i))


def test_an_off_model_candidate_is_rejected_even_with_the_best_pose(tmp_path: Path) -> None:
    c = load_character(_identity_project(tmp_path))
    _recolour(tmp_path, "f00", 1)  # candidate 1 is the template's pose: the best IoU, but red hair
    clean_set(c, "face", method="flood", progress=False)
    assert pick_set(c, "face", scorer=None) == {"f00": 1, "f02": 1, "f12": 1}  # by pose alone: the red one
    out = pick_outcome(c, "face")
    assert out.picks["f00"] != 1 and out.picks["f02"] == 1 and out.rejected == []
    scores = {(s.code, s.candidate): s for s in out.scores}
    red = scores[("f00", 1)]
    assert red.iou == max(s.iou for s in out.scores if s.code == "f00")
    assert red.identity > out.threshold == 0.1
    assert all(s.identity <= 0.1 for k, s in scores.items() if k != ("f00", 1))
    text = (c.work_dir("face") / "picks.toml").read_text(encoding="utf-8")
    assert "rejected despite a better IoU: #1 (IoU" in out.why["f00"]
    from charframe.util import toml as tomlio
    data = tomlio.loads(text)
    assert data["why"]["f00"] == out.why["f00"] and data["auto"]["f00"] == out.picks["f00"]
    assert data["scores"]["f00"][1] == {"n": 1, "iou": round(red.iou, 4), "edge": round(red.edge, 4),
                                        "identity": round(red.identity, 4)}
    assert read_selection(c.work_dir("face") / "picks.toml") == out.picks  # informative tables are no picks
    # the picked sheet, redrawn from picks.toml alone (as after a hand edit): identity under every candidate, the
    # red one marked, the threshold in the legend, the winner's reason
    layout = draw_picked_sheet(c, "face")
    texts = " | ".join(layout.texts)
    assert f"identity {red.identity:.3f}" in texts and "not the character" in layout.texts
    assert "identity threshold 0.100" in texts and "best IoU of the character" in layout.texts


def test_references_are_the_character(tmp_path: Path) -> None:
    """With `reference` pictures of a red-haired character, the red candidate is the one accepted."""
    ref = tmp_path / "refs" / "red.png"
    write_png(ref, compose_figure(figure_mask((80, 80), shift=(0.05, 0.0)), hair=RED, background=(0, 0, 0), seed=5))
    c = load_character(_identity_project(tmp_path, extra='reference = ["refs/red.png"]\n'))
    _recolour(tmp_path, "f00", 2)
    clean_set(c, "face", method="flood", progress=False)
    out = pick_outcome(c, "face")
    assert out.picks == {"f00": 2} and out.rejected == ["f02", "f12"]
    assert out.why["f02"].startswith("no pick: all 3 candidates differ from the character")
    assert "f02" not in read_selection(c.work_dir("face") / "picks.toml")


def test_a_code_without_the_character_gets_new_seeds_then_is_reported(tmp_path: Path, caplog) -> None:
    """Every f02 candidate has red hair: one retry round makes 3 more (tiny model, seeds 1234+3…), still not the
    character (noise pictures), so f02 is reported and left out; the new candidates are generate's own."""
    from charframe.cleaning.retry import pick_with_retries
    from charframe.generation.generate import MANIFEST, generate_set
    from charframe.util.manifest import Manifest

    char = _identity_project(tmp_path, extra="[generation]\nsize = 64\nsteps = 1\nhires_scale = 1.0\ncandidates = 3\n"
                                             'sampler = "Euler a"\nretries = 1\n')
    for i in range(3):
        _recolour(tmp_path, "f02", i)
    c = load_character(char)
    clean_set(c, "face", method="flood", progress=False)
    caplog.set_level("INFO", logger="charframe")
    out = pick_with_retries(c, "face", progress=False)
    raw = c.work_dir("face") / "raw"
    assert candidates(raw)["f02"] == [0, 1, 2, 3, 4, 5] and candidates(raw)["f00"] == [0, 1, 2]
    assert out.rejected == ["f02"] and set(out.picks) == {"f00", "f12"}
    assert out.why["f02"].endswith("after 1 retry")
    assert "f02: left out of the dataset: no candidate is the character after 1 retry" in caplog.text
    m = Manifest.load(raw.parent / MANIFEST)
    assert {f"raw/f02-{i}.png" for i in (3, 4, 5)} <= set(m.names())
    assert read_image(raw / "f02-3.png", 3).shape == (64, 64, 3)
    # a later generate of the whole set keeps the retry candidates (current) and makes nothing
    again = generate_set(c, "f", codes=["f00", "f02", "f12"], progress=False)
    assert not again.written and not again.replaced and raw / "f02-4.png" in again.skipped
    # a second pick with retries makes nothing more (the round is done)
    assert pick_with_retries(c, "face", progress=False).rejected == ["f02"]
    assert candidates(raw)["f02"] == [0, 1, 2, 3, 4, 5]


def test_bad_model_and_reference_files_are_one_line(tmp_path: Path, hf_cache: Path) -> None:
    with pytest.raises(CharframeError, match=r"models--deepghs--ccip_onnx: the identity model file "
                                             r"ccip-caformer-24-randaug-pruned/model_feat.onnx is not in the Hugging "
                                             r"Face cache; download it once: huggingface-cli download"):
        ccip.locate()
    folder = tiny_ccip.write_folder(tmp_path / "m", "random")
    (folder / "model_metrics.onnx").unlink()
    with pytest.raises(CharframeError, match=r"m/model_metrics.onnx: the identity model file model_metrics.onnx is not there"):
        ccip.locate(str(folder))
    folder = tiny_ccip.write_folder(tmp_path / "g", "random")
    (folder / "model_feat.onnx").write_bytes(b"garbage, not onnx" * 10)
    scorer = ccip.Scorer(ccip.locate(str(folder)), cache=tmp_path / "fc")
    pic = _pictures(tmp_path / "pics")[0]
    with pytest.raises(CharframeError, match=r"g/model_feat.onnx: not a usable ONNX model \(") as e:
        scorer.features([pic])
    assert "\n" not in str(e.value)
    (folder / "metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(CharframeError, match=r"g/metrics.json: not a CCIP metrics.json"):
        ccip.locate(str(folder))
    not_a_picture = tmp_path / "refs" / "notes.png"
    not_a_picture.parent.mkdir()
    not_a_picture.write_text("these are my notes", encoding="utf-8")
    good = ccip.Scorer(ccip.locate(str(tiny_ccip.write_folder(tmp_path / "ok", "random"))), cache=tmp_path / "fc")
    with pytest.raises(CharframeError, match=r"refs/notes.png: not a readable picture"):
        good.features([not_a_picture])
    char = _identity_project(tmp_path / "p", extra='reference = ["refs/missing.png"]\n')
    with pytest.raises(CharframeError, match=r"krnk.toml:\d+: reference: 'refs/missing.png': no such picture"):
        load_character(char)
