"""The score step (issue 22) on the real steps: checkpoints of a retrained face stage, a scorer that prefers a known
step, merge and compress made from that checkpoint, nothing re-scored on a rerun, `--step` pinning, the report in
a headless browser (every picture it links exists)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from charframe.errors import CharframeError
from charframe.lora.io import read_network
from charframe.models import tagger
from charframe.pipeline import score as score_mod
from charframe.pipeline.runner import Options, run_target
from charframe.pipeline.score_file import (
    Cost, StepScore, chosen_lora, choose, cost_line, cost_path, draw_params, pin_step, read_cost, read_score,
    report_path, score_path,
)
from charframe.pipeline.stages import target_jobs
from charframe.testing import tiny_tagger
from project_builder import copy_project
from train_data import one_thread  # noqa: F401  (one torch thread for the tiny model)

PREFERRED = {2: 0.30, 4: 0.10, 6: 0.20}  # the fake scorer likes step 4 best


def test_the_rule() -> None:
    s = lambda step, ident, adh=None: StepScore(step, f"s{step}", "d", ident, adh)  # noqa: E731
    assert choose([s(2, 0.3), s(4, 0.1), s(6, 0.2)]) == (4, "lowest identity difference 0.1000")
    step, why = choose([s(2, 0.104), s(4, 0.1), s(6, 0.2)], tie=0.005)
    assert step == 2 and "earliest" in why  # within the tie of the lowest: less training wins
    assert choose([s(2, 0.1, 0.2), s(4, 0.15, 0.9)], adherence_floor=0.5)[0] == 4
    assert choose([s(2, None), s(4, None)]) == (4, "the last step (identity is not scored: no identity model)")
    assert choose([s(2, 0.1), s(4, 0.3)], pinned=4)[0] == 4
    with pytest.raises(CharframeError, match=r"pinned = 3: no checkpoint of that step \(saved: 2, 4\)"):
        choose([s(2, 0.1), s(4, 0.3)], pinned=3)


class _FakeScorer:
    model = SimpleNamespace(key="fake-model")
    threshold = 0.25

    def __init__(self) -> None:
        self.calls: list[int] = []


@pytest.fixture(scope="module")
def scored(built, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the built project whose krnk face recipe saves a checkpoint every 2 of its 6 steps, run (face
    stage) with a scorer that prefers step 4."""
    root = copy_project(built[0], tmp_path_factory.mktemp("score") / "proj")
    char = root / "Characters" / "krnk.toml"
    text = char.read_text(encoding="utf-8")
    char.write_text(text.replace("[training.face]\n", "[training.face]\nsave_every = 2\n", 1), encoding="utf-8")
    mp = pytest.MonkeyPatch()
    fake = _FakeScorer()

    def identity(scorer, pictures, dataset):  # the step is in the folder of its pictures: step00000004/
        step = int(re.search(r"step(\d{8})", str(pictures[0])).group(1))
        fake.calls.append(step)
        assert pictures and all(p.is_file() for p in pictures) and dataset
        return PREFERRED[step]

    mp.setattr(score_mod, "scorer_for", lambda root: fake)
    mp.setattr(score_mod, "checkpoint_identity", identity)
    mp.setattr(score_mod, "identities", lambda scorer, pics, refs: ([0.01 * i for i in range(len(pics))], "medoid"))
    _, report = run_target(char, Options(stage="face", progress=False))
    yield SimpleNamespace(root=root, char=char, report=report, fake=fake, mp=mp,
                          job=target_jobs(char, "face")[0])
    mp.undo()


def test_the_preferred_step_is_merged_and_compressed(scored) -> None:
    assert not scored.report.failed, [(r.step, r.message) for r in scored.report.failed]
    ran = [r.step for r in scored.report.results if r.status == "ran"]
    assert ran == ["prepare", "train", "score", "merge", "compress", "preview"]  # a copy's TOMLs get its paths
    job = scored.job
    s = read_score(score_path(job))
    assert [x.step for x in s.steps] == [2, 4, 6] and s.chosen == 4
    assert s.file == f"{job.lora.stem}-step00000004.safetensors" and chosen_lora(job).name == s.file
    assert sorted(scored.fake.calls) == [2, 4, 6]
    history = json.loads(read_network(job.merged).metadata["charframe_history"])
    assert history[-1]["source"] == s.file  # merged from the chosen checkpoint, not the last step
    comp = json.loads(read_network(job.compressed).metadata["charframe_history"])
    assert comp[-1]["source"] == job.merged.name
    grids = [job.lora.parent / x.grid for x in s.steps]
    assert all(g.is_file() for g in grids)
    assert s.dataset and all(re.fullmatch(r"krnk girl/f\d\d", k) for k in s.dataset)
    cost = read_cost(cost_path(job))  # the step's own timings, apart from the score file (which they never change)
    assert cost.train_seconds > 0 and sorted(cost.seconds) == [2, 4, 6] and min(cost.seconds.values()) > 0
    assert "% of the training's" in cost_line(cost, [2, 4, 6])
    assert "Cost: scoring 3 checkpoint(s)" in report_path(job).read_text(encoding="utf-8")


def test_a_rerun_scores_nothing_and_a_pinned_step_rescores_nothing(scored) -> None:
    _, again = run_target(scored.char, Options(stage="face", progress=False))
    assert not again.ran
    scored.fake.calls.clear()
    pin_step(scored.job, 6)
    _, pinned = run_target(scored.char, Options(stage="face", progress=False))
    assert [r.step for r in pinned.ran] == ["score", "merge", "compress", "preview"]
    assert scored.fake.calls == []  # every checkpoint's scores were read back from the score file
    s = read_score(score_path(scored.job))
    assert s.chosen == 6 and s.pinned == 6 and "pinned by hand" in s.reason
    assert json.loads(read_network(scored.job.merged).metadata["charframe_history"])[-1]["source"] == scored.job.lora.name
    with pytest.raises(CharframeError, match=r"no checkpoint of step 5 of .* \(saved: 2, 4, 6\); choose one of them"):
        pin_step(scored.job, 5)
    pin_step(scored.job, 0)
    _, back = run_target(scored.char, Options(stage="face", progress=False))
    assert read_score(score_path(scored.job)).chosen == 4 and scored.fake.calls == []
    assert "merge" in [r.step for r in back.ran]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.src += [v for k, v in attrs if k == "src"]


def test_the_report_links_only_pictures_that_exist_and_renders_in_a_browser(scored, tmp_path: Path) -> None:
    page = report_path(scored.job)
    text = page.read_text(encoding="utf-8")
    assert "Step <b>4</b>" in text and "<svg" in text and "Training images: identity per code" in text
    links = _Links()
    links.feed(text)
    assert len(links.src) >= 4  # two preview grids, the stage preview, the training images
    assert all((page.parent / src).is_file() for src in links.src), [s for s in links.src if not (page.parent / s).is_file()]
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium); the links were checked above")
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'data-broken="0"' in dom  # the page's own check: every <img> loaded
    shot = tmp_path / "report.png"
    subprocess.run(base + ["--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1600) and len(np.unique(np.asarray(img))) > 20  # drawn, not blank


def test_score_seeds_rescore_every_checkpoint_and_the_strength_sweep_none(scored) -> None:
    """A checkpoint is drawn at the first preview seed unless `[score] seeds` says more; changing them re-scores
    every checkpoint; the preview's strength sweep is not part of what a score depends on."""
    job, toml = scored.job, scored.root / "charframe.toml"
    first = read_score(score_path(job))
    assert draw_params(job)["seeds"] == [1]
    assert len(list((job.lora.parent / first.steps[0].grid).with_suffix("").glob("*.png"))) == 4  # 1 scene + 3 codes
    text = toml.read_text(encoding="utf-8")
    try:
        toml.write_text(text.replace("[preview]\n", "[preview]\nstrengths = [0.5, 1.0]\n", 1), encoding="utf-8")
        assert draw_params(job) == draw_params(replace(job))  # read afresh: the sweep changes nothing
        scored.fake.calls.clear()
        score_mod.score_job(job, progress=False)
        assert scored.fake.calls == []
        toml.write_text(text + "[score]\nseeds = [1, 2]\nsteps = 9\n", encoding="utf-8")
        assert draw_params(job)["seeds"] == [1, 2] and draw_params(job)["steps"] == 1  # the tiny model keeps its 1
        score_mod.score_job(job, progress=False)
        assert sorted(scored.fake.calls) == [2, 4, 6]  # every checkpoint drawn again
        s = read_score(score_path(job))
        assert all(x.settings != y.settings for x, y in zip(s.steps, first.steps)) and s.chosen == 4
        assert len(list((job.lora.parent / s.steps[0].grid).with_suffix("").glob("*.png"))) == 8  # × 2 seeds
    finally:
        toml.write_text(text, encoding="utf-8")


def test_the_cost_line_says_the_share_and_the_interval_that_keeps_it() -> None:
    steps = [100, 200, 300, 400]
    cost = Cost({k: 0.5 for k in steps}, 40.0)  # 0.1 s per training step
    assert cost_line(cost, steps) == ("scoring 4 checkpoint(s) takes 2.0 s (0.50 s each): 5.0 % of the training's "
                                      "40.0 s (target ≤ 10 %)")
    cost.train_seconds = 10.0  # 0.025 s per step: 20 %, under 10 % from every 200 steps
    assert cost_line(cost, steps).startswith("scoring 4 checkpoint(s) takes 2.0 s (0.50 s each): 20.0 % of")
    assert "holds from a checkpoint every ≥ 200 steps (save_every)" in cost_line(cost, steps)
    assert cost_line(Cost({}, 10.0), steps) == "" and cost_line(None, steps) == ""


def test_a_tagger_scores_adherence_and_its_floor_leaves_a_step_out(scored, tmp_path: Path, caplog) -> None:
    """`[score] tagger`: each checkpoint's prompt adherence (the tiny WD14-signature tagger on its real pictures),
    shown in the report; a step under the `adherence` floor is not chosen even with the best identity."""
    job, toml = scored.job, scored.root / "charframe.toml"
    tiny_tagger.write_folder(scored.root / "models" / "tagger")
    text = toml.read_text(encoding="utf-8")
    try:
        toml.write_text(text + '[score]\ntagger = "models/tagger"\n', encoding="utf-8")
        scored.fake.calls.clear()
        score_mod.score_job(job, progress=False)
        assert sorted(scored.fake.calls) == [2, 4, 6]  # a new tagger: every checkpoint judged again
        s = read_score(score_path(job))
        t = tagger.Tagger(tagger.locate(str(scored.root / "models" / "tagger")), cache=tmp_path / "c")
        texts = score_mod.score_draw(job).texts
        for x in s.steps:  # the recorded adherence is the tagger's on the checkpoint's own pictures
            pictures = sorted((job.lora.parent / x.grid).with_suffix("").glob("*.png"))
            assert len(pictures) == len(texts) == 4  # one seed again: the 2-seed pictures of before are gone
            expected = [tagger.expected_tags(p, t.vocabulary) for p in texts]
            assert expected[0] >= {"forest", "1girl"}  # the scene "in a forest", the character's "1girl"
            assert x.adherence == pytest.approx(tagger.adherence(t.tags(pictures), expected))
        assert "prompt adherence" in report_path(job).read_text(encoding="utf-8")
        with pytest.MonkeyPatch.context() as mp:  # the rule: step 4 (best identity) under the floor → step 6
            mp.setattr(score_mod, "checkpoint_adherence", lambda tg, pics, texts, seeds: {
                2: 0.9, 4: 0.2, 6: 0.8}[int(re.search(r"step(\d{8})", str(pics[0])).group(1))])
            toml.write_text(text + '[score]\ntagger = "models/tagger"\nadherence = 0.5\nseeds = [1]\n',
                            encoding="utf-8")  # seeds named: the same pictures, but the floor and key are read anew
            score_path(job).unlink()
            score_mod.score_job(job, progress=False)
        s = read_score(score_path(job))
        assert s.chosen == 6 and "1 step(s) under the adherence floor 0.5 left out" in s.reason
        with caplog.at_level(logging.WARNING, logger="charframe.pipeline.score"):
            score_mod.score_job(job, progress=False, scorer=None)  # no identity model: the tagger has no pictures
        assert "[score] tagger is set but identity is not scored" in caplog.text
        (scored.root / "models" / "tagger" / "model.onnx").unlink()
        with pytest.raises(CharframeError, match=r"tagger/model.onnx: the tagger \(\[score\] tagger\) file model.onnx "
                                                 r"is not there"):
            score_mod.score_job(job, progress=False)
    finally:
        toml.write_text(text, encoding="utf-8")
        score_mod.score_job(job, progress=False)
