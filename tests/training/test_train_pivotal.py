"""Pivotal tuning in the built-in trainer on the tiny model: the trigger embedding moves, stops at its fraction of
the run, is bundled one key per embedding and written standalone; the files load in diffusers, sd-scripts and by
WebUI's bundle grouping; a resumed run ends where an uninterrupted one does; a body stage reuses the face's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from charframe.errors import CharframeError
from charframe.generation.prompt import chunk_tokens, encode_chunks
from charframe.lora.io import load_lora_file
from charframe.models.embeddings import EmbeddingSet, init_vectors, read_bundle, read_embedding
from charframe.models.tiny import build_tiny_sd
from charframe.training import pivotal as pv
from charframe.training.adapters import attach_lora, remove_network
from charframe.training.engines import train_with
from charframe.training.engines.builtin import train
from charframe.training.outputs import find_state
from charframe.training.plan import TrainPlan, make_plan
from charframe.training.result import TrainingInterrupted
from train_data import charframe_dataset, one_thread  # noqa: F401 (autouse fixture)
from webui_bundle import sd_scripts_dims, webui_bundle_grouping

KEY = "bundle_emb.krnk.string_to_param.*"


def _plan(root: Path, steps: int = 4, **kw) -> TrainPlan:
    toml = kw.pop("dataset", None) or charframe_dataset(root, n=1, repeats=1, batch=1)
    return make_plan("Lora1x1A1-AdamW8", 4, 1000, steps, dataset=toml, out=kw.pop("out", "krnk"),
                     output_dir=str(root / "LoRAOutput"), logging_dir=str(root / "LoRALog"), **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 steps, the trigger trained for the first half; its vectors seen before every optimizer step."""
    root = tmp_path_factory.mktemp("pivotal")
    plan = _plan(root, pivotal_trigger="krnk")
    seen: list[torch.Tensor] = []
    original = pv.PivotalRun.before_update

    def watch(self, step: int) -> None:
        seen.append(self.parameter.detach().clone().cpu())
        original(self, step)

    comps = build_tiny_sd()
    init = init_vectors(comps.tokenizer, comps.text_encoder, "girl", 4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pv.PivotalRun, "before_update", watch)
        result = train(plan, components=comps)
    return dict(plan=plan, result=result, seen=seen, init=init, root=root)


def test_trigger_moves_then_stops_at_the_set_fraction(run) -> None:
    seen, init = run["seen"], run["init"]
    final = load_file(str(run["result"].output))[KEY]
    assert len(seen) == 4 and run["plan"].pivotal.stop_step(4) == 2
    assert torch.equal(seen[0], init)  # started from the class word ("krnk girl" → "girl"), WebUI's rule
    assert not torch.allclose(seen[1], seen[0]) and not torch.allclose(seen[2], seen[1])  # steps 1, 2 train it
    assert torch.equal(seen[3], seen[2]) and torch.equal(final, seen[2])  # steps 3, 4 leave it alone
    assert final.dtype == torch.float32 and final.shape == (4, 32)


def test_bundle_is_one_key_and_webui_reads_it(run) -> None:
    tensors = load_file(str(run["result"].output))
    assert [k for k in tensors if k.startswith("bundle_emb")] == [KEY]
    grouped = webui_bundle_grouping(tensors)
    assert list(grouped) == ["krnk"] and torch.equal(grouped["krnk"]["string_to_param"]["*"], tensors[KEY])
    (e,) = read_bundle(run["result"].output)
    assert e.name == "krnk" and e.shorthash == run["result"].output.stem


def test_standalone_file_equals_the_bundle(run) -> None:
    out = run["result"].output
    standalone = out.with_name(out.stem + "-embeddings") / "krnk.safetensors"
    e = read_embedding(standalone)
    assert e.name == "krnk" and torch.equal(e.vectors, load_file(str(out))[KEY])


def test_sd_scripts_ignores_the_bundle_keys(run) -> None:
    tensors = load_file(str(run["result"].output))
    plain = {k: v for k, v in tensors.items() if not k.startswith("bundle_emb.")}
    dims, alphas = sd_scripts_dims(tensors)
    assert (dims, set(alphas)) == (sd_scripts_dims(plain)[0], set(sd_scripts_dims(plain)[1]))
    assert not any(name.startswith("bundle_emb") for name in dims)


def test_diffusers_loads_the_standalone_embedding_and_the_lora_part(run) -> None:
    """`load_textual_inversion` on the standalone file gives the same conditioning as charframe's WebUI path; the
    LoRA part (the file without its bundle key) loads with `load_lora_weights` and changes the UNet as charframe's
    own loader does."""
    pytest.importorskip("peft")
    out = run["result"].output
    comps = build_tiny_sd()
    pipe = comps.pipeline()
    pipe.load_textual_inversion(str(out.with_name(out.stem + "-embeddings") / "krnk.safetensors"))
    vectors = load_file(str(out))[KEY]
    rows = pipe.tokenizer.convert_tokens_to_ids(["krnk", "krnk_1", "krnk_2", "krnk_3"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[rows].detach(), vectors)
    prompt = "krnk, white background"
    with torch.no_grad():
        theirs = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
        ref = build_tiny_sd()
        ours = encode_chunks(chunk_tokens(prompt, ref.tokenizer, EmbeddingSet(ref.tokenizer, read_bundle(out))),
                             ref.text_encoder, 1)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)

    tensors, _ = load_lora_file(out)
    lora_part = {k: v for k, v in tensors.items() if not k.startswith("bundle_emb.")}
    a, b = build_tiny_sd(), build_tiny_sd()
    pa = a.pipeline()
    pa.load_lora_weights(dict(lora_part))
    net = attach_lora(b.unet, b.text_encoder, lora_part)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = b.tokenizer(["krnk white"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ea, eb = pa.text_encoder(ids)[0], b.text_encoder(ids)[0]
        torch.testing.assert_close(ea, eb, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(pa.unet(x, 500, ea).sample, b.unet(x, 500, eb).sample, atol=1e-4, rtol=1e-4)
    remove_network(net)


def test_plan_round_trips_with_its_pivotal_table(run) -> None:
    saved = run["result"].output.with_name(run["result"].output.stem + ".train.toml")
    text = saved.read_text(encoding="utf-8")
    assert "[plan.pivotal]" in text and 'trigger = "krnk"' in text
    assert TrainPlan.load(saved) == run["plan"]
    off = _plan(run["root"] / "off")
    assert "pivotal" not in off.to_dict() and TrainPlan.from_dict(off.to_dict()) == off


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path) -> None:
    whole = train(_plan(tmp_path / "a", pivotal_trigger="krnk", pivotal_stop_at=0.75), components=build_tiny_sd())
    plan = _plan(tmp_path / "b", pivotal_trigger="krnk", pivotal_stop_at=0.75)

    def interrupt(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(plan, components=build_tiny_sd(), on_step=interrupt)
    state = find_state(plan.io, plan.output_name)
    assert KEY in load_file(str(state / "network.safetensors"))
    resumed = train(plan, components=build_tiny_sd(), resume=True)
    a, b = load_file(str(whole.output)), load_file(str(resumed.output))
    assert resumed.losses == whole.losses and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_body_stage_reuses_the_face_embedding_fixed(run, tmp_path) -> None:
    """Captions calling `krnk` get the face LoRA's vectors, unchanged, and the new LoRA bundles them too."""
    face = run["result"].output
    body = train(_plan(tmp_path, out="krnksf", pivotal_reuse=[str(face)]), components=build_tiny_sd())
    a, b = load_file(str(face)), load_file(str(body.output))
    assert [k for k in b if k.startswith("bundle_emb")] == [KEY] and torch.equal(a[KEY], b[KEY])
    assert not (body.output.with_name(body.output.stem + "-embeddings")).exists()  # nothing trained: no standalone


def test_continue_from_a_bundled_lora_continues_the_trigger(run, tmp_path) -> None:
    face = run["result"].output
    seen: list[torch.Tensor] = []
    original = pv.PivotalRun.before_update

    def watch(self, step: int) -> None:
        seen.append(self.parameter.detach().clone().cpu())
        original(self, step)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pv.PivotalRun, "before_update", watch)
        train(_plan(tmp_path, steps=1, pivotal_trigger="krnk", continue_from=str(face)), components=build_tiny_sd())
    assert torch.equal(seen[0], load_file(str(face))[KEY])


@pytest.mark.parametrize("case,words", [
    ("absent", ("no caption holds the pivotal trigger 'nobody'",)),
    ("dot", ("cannot name an embedding",)),
    ("reuse_missing", ("no such file to reuse",)),
    ("reuse_plain", ("a LoRA without bundled embeddings",)),
    ("kohya", ("built-in trainer",)),
])
def test_bad_pivotal_settings_refused(run, tmp_path, case, words) -> None:
    plain = tmp_path / "plain.safetensors"
    tensors = load_file(str(run["result"].output))
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if not k.startswith("bundle_emb")}, str(plain))
    options = {"absent": dict(pivotal_trigger="nobody"), "dot": dict(pivotal_trigger="kr.nk"),
               "reuse_missing": dict(pivotal_reuse=[str(tmp_path / "nope.safetensors")]),
               "reuse_plain": dict(pivotal_reuse=[str(plain)]), "kohya": dict(pivotal_trigger="krnk")}[case]
    plan = _plan(tmp_path, **options)
    with pytest.raises(CharframeError) as exc:
        if case == "kohya":
            train_with(plan, "kohya", kohya_dir=tmp_path)
        else:
            train(plan, components=build_tiny_sd())
    assert "\n" not in str(exc.value) and all(w in str(exc.value) for w in words), str(exc.value)
    assert not list((tmp_path / "LoRAOutput").rglob("*.safetensors"))


def test_cli_options_and_early_refusals(tmp_path, capsys) -> None:
    """`charframe train --pivotal-*` fills [plan.pivotal]; a bad trigger is refused naming the flag, before any model."""
    from charframe.cli import main

    toml = charframe_dataset(tmp_path, n=1, repeats=1, batch=1)
    args = ["train", str(toml.parent), "--logic", "Lora1x1A1-AdamW8", "--dim", "2", "--lr", "100", "--steps", "1",
            "--out", "cli"]
    assert main([*args, "--pivotal-trigger", "krnk", "--pivotal-vectors", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '[plan.pivotal]\ntrigger = "krnk"\nvectors = 2\n' in out
    assert main([*args, "--dry-run"]) == 0 and "[plan.pivotal]" not in capsys.readouterr().out
    assert main([*args, "--pivotal-trigger", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "no caption holds the pivotal trigger 'nobody'" in err and "--pivotal-trigger" in err
    assert not (tmp_path / "LoRAOutput").exists() or not list((tmp_path / "LoRAOutput").rglob("*.safetensors"))
