"""The built-in trainer on the tiny SD1.x model: it learns, writes loadable files, resumes exactly."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from charframe.errors import CharframeError
from charframe.lora.io import load_lora_file
from charframe.models.tiny import build_tiny_sd
from charframe.training.data import load_dataset
from charframe.training.images import load_pixels
from charframe.training.adapters import attach_lora, remove_network
from charframe.training.plan import make_plan, parse_logic
from charframe.training.engines.builtin import train
from charframe.training.loss import denoise_loss
from charframe.training.outputs import find_state
from charframe.training.result import TrainingInterrupted
from train_data import charframe_dataset, one_thread  # noqa: F401 (autouse fixture)

LR = 20000  # 2e-2: large enough that 30 steps on the tiny model move the loss clearly


def _plan(root: Path, logic: str, steps: int, **kw):
    toml = kw.pop("dataset", None) or charframe_dataset(root, n=1, repeats=1, batch=1)
    return make_plan(logic, 4, kw.pop("lr", LR), steps, dataset=toml, out="krnk", output_dir=str(root / "LoRAOutput"),
                     logging_dir=str(root / "LoRALog"), **kw)


def _render(comps) -> np.ndarray:
    pipe = comps.pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe("krnk, white background", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def lora3x3(tmp_path_factory):
    """30 steps of Lora3x3 on one image; eval loss on a fixed batch before and after."""
    root = tmp_path_factory.mktemp("l3")
    plan = _plan(root, "Lora3x3A50p-AdamW8", 30)
    group = load_dataset(plan.io.dataset)
    ds = group.datasets[0]
    pixels = torch.stack([load_pixels(ds.images[0], ds.subsets[0], np.random.default_rng(0))] * 4)
    captions = [ds.images[0].caption] * 4
    timesteps = torch.tensor([150, 400, 650, 900])

    def eval_loss(comps) -> float:
        with torch.no_grad():
            return float(denoise_loss(comps, pixels, captions, torch.ones(4), torch.Generator().manual_seed(0),
                                      recipe=plan.recipe, device=torch.device("cpu"), timesteps=timesteps))

    comps = build_tiny_sd()
    before = eval_loss(comps)
    result = train(plan, components=comps)
    tensors, metadata = load_lora_file(result.output)
    net = attach_lora(comps.unet, comps.text_encoder, tensors)
    after = eval_loss(comps)
    remove_network(net)
    return dict(plan=plan, result=result, before=before, after=after, tensors=tensors, metadata=metadata)


@pytest.fixture(scope="module")
def others(tmp_path_factory):
    """2 steps each of Lora1x1 (with samples), Locon and Loha (Adafactor)."""
    out = {}
    for logic, extra in (("Lora1x1A1-AdamW8", dict(sample_every=2, sample_prompts=["krnk"], sample_seeds=[5],
                                                   sample_size=64, sample_steps=2)),
                         ("LoconA50p-AdamW8", {}), ("LohaA50p-AdaFactor", {})):
        root = tmp_path_factory.mktemp(logic)
        result = train(_plan(root, logic, 2, **extra), components=build_tiny_sd())
        out[parse_logic(logic).network] = result
    return out


def test_30_steps_lower_the_loss(lora3x3) -> None:
    assert lora3x3["after"] < lora3x3["before"] - 0.05, (lora3x3["before"], lora3x3["after"])
    losses = lora3x3["result"].losses
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5])


def test_output_name_and_plan_file(lora3x3) -> None:
    out = lora3x3["result"].output
    assert out.name == f"krnk-Lora3x3A50p-AdamW8-4-{LR}-30.safetensors" and out.parent.name == "krnk"
    assert out.with_name(out.stem + ".train.toml").is_file()
    assert not list(out.parent.glob("*-state"))  # finished runs leave no state behind
    assert all(t.dtype == torch.float16 for t in lora3x3["tensors"].values())  # fp16 save


def test_metadata_keys(lora3x3) -> None:
    md = lora3x3["metadata"]
    plan = lora3x3["plan"]
    assert md["ss_network_module"] == "networks.lora"
    assert (md["ss_network_dim"], md["ss_network_alpha"]) == ("4", "2.0")  # alpha as sd-scripts writes it
    assert (md["ss_noise_offset"], md["ss_max_token_length"], md["ss_loss_type"]) == ("None", "None", "l2")
    ds = json.loads(md["ss_datasets"])[0]
    assert ds["bucket_info"] == {"buckets": {"0": {"resolution": [64, 64], "count": 1}}, "mean_img_ar_error": 0.0}
    assert ds["subsets"][0]["keep_tokens_separator"] == "" and ds["subsets"][0]["caption_prefix"] is None
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2"}
    assert md["ss_base_model_version"] == "sd_v1" and md["ss_v2"] == "False"
    assert (md["ss_clip_skip"], md["ss_seed"], md["ss_steps"], md["ss_max_train_steps"]) == ("2", "31337", "30", "30")
    assert float(md["ss_learning_rate"]) == plan.optimizer.learning_rate and float(md["ss_text_encoder_lr"]) == 8800e-6
    assert md["ss_output_name"] == plan.output_name and md["ss_session_id"].isdigit()
    assert json.loads(md["ss_tag_frequency"]) == {"krnk girl_f0064": {"krnk": 1, "white background": 1, "from front": 1}}
    assert json.loads(md["ss_dataset_dirs"]) == {"krnk girl_f0064": {"n_repeats": 1, "img_count": 1}}
    assert md["ss_sd_model_name"] == "charframe-tiny-sd15"
    assert md["ss_optimizer"] == "torch.optim.adamw.AdamW" and md["ss_lr_scheduler"] == "cosine_with_restarts"
    assert len(md["sshs_model_hash"]) == 64 and len(md["sshs_legacy_hash"]) == 8
    assert md["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert md["modelspec.title"] == plan.output_name and md["modelspec.encoder_layer"] == "2"
    assert md["modelspec.trigger_phrase"] == "krnk girl"


def test_metadata_has_every_key_sd_scripts_writes(lora3x3) -> None:
    """WebUI/ComfyUI metadata viewers show the same fields for files from either engine."""
    import gzip

    golden = Path(__file__).parents[1] / "data" / "sd_scripts_sd15_keys.json.gz"
    theirs = set(json.loads(gzip.decompress(golden.read_bytes()))["metadata_keys"]) - {"ss_sd_scripts_commit_hash"}
    theirs -= {"ss_sd_model_hash", "ss_new_sd_model_hash"}  # this fixture's model is built in memory, not read from a file
    assert sorted(theirs - set(lora3x3["metadata"])) == []


@pytest.mark.parametrize("kind", ["Lora1x1", "Lora3x3", "Locon"])
def test_diffusers_loads_the_file_and_it_changes_the_output(kind, lora3x3, others) -> None:
    path = lora3x3["result"].output if kind == "Lora3x3" else others[kind].output
    tensors, _ = load_lora_file(path)
    comps = build_tiny_sd()
    base = _render(comps)
    pipe = comps.pipeline()
    pipe.load_lora_weights(str(path), adapter_name="cf")
    injected = sum(1 for m in list(pipe.unet.modules()) + list(pipe.text_encoder.modules())
                   if "cf" in getattr(m, "lora_A", {}))
    assert injected == len({k.split(".")[0] for k in tensors})  # every module of the file was applied
    pipe.set_progress_bar_config(disable=True)
    lora_img = pipe("krnk, white background", num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images
    assert np.abs(lora_img - base).max() > 1e-3
    if kind == "Lora3x3":  # diffusers applies it exactly as charframe's own modules do
        ours = build_tiny_sd()
        attach_lora(ours.unet, ours.text_encoder, tensors)
        assert np.abs(_render(ours) - lora_img).max() < 1e-3


def test_loha_file_loads_and_changes_the_output(others) -> None:
    """diffusers has no LoHa converter; LyCORIS (what WebUI/ComfyUI use too) applies it to the pipeline."""
    tensors, md = load_lora_file(others["Loha"].output)
    assert md["ss_network_module"] == "lycoris.kohya" and json.loads(md["ss_network_args"])["algo"] == "loha"
    assert md["ss_optimizer"].startswith("transformers.optimization.Adafactor(relative_step=True")
    assert "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a" in tensors
    comps = build_tiny_sd()
    base = _render(comps)
    attach_lora(comps.unet, comps.text_encoder, tensors)
    # Adafactor's relative steps start small on LoHa's zero factor: a small but real change (noise ~1e-6)
    assert np.abs(_render(comps) - base).max() > 1e-4


def test_samples_and_tensorboard(others) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = others["Lora1x1"]
    assert [p.name for p in result.samples] == [f"{result.output.stem}_000002_0_5.png"]
    assert result.samples[0].is_file()
    assert result.log_dir.name.startswith(result.output.stem) and result.log_dir.parent.name == "LoRALog"
    acc = EventAccumulator(str(result.log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/current", "loss/average", "lr/unet", "lr/textencoder"} <= tags
    assert [e.step for e in acc.Scalars("loss/current")] == [1, 2]
    assert acc.Scalars("lr/textencoder")[0].value == pytest.approx(8800e-6)


def test_resume_gives_the_same_losses(tmp_path: Path) -> None:
    whole = train(_plan(tmp_path / "a", "Lora1x1A50p-AdamW8", 6, lr=1000), components=build_tiny_sd())
    plan = _plan(tmp_path / "b", "Lora1x1A50p-AdamW8", 6, lr=1000)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="with resume to continue"):
        train(plan, components=build_tiny_sd(), on_step=interrupt)
    state = find_state(plan.io, plan.output_name)
    assert state is not None and not list(state.parent.glob("*.safetensors"))
    with pytest.raises(CharframeError, match="add resume"):  # checked before any model is loaded
        train(plan)
    with pytest.raises(CharframeError, match="different settings"):
        train(_plan(tmp_path / "b", "Lora1x1A50p-AdamW8", 6, lr=1000, clip_skip=1), resume=True)
    resumed = train(plan, components=build_tiny_sd(), resume=True)
    assert resumed.losses == whole.losses
    a, _ = load_lora_file(whole.output)
    b, _ = load_lora_file(resumed.output)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert find_state(plan.io, plan.output_name) is None


def test_never_overwrites_and_continues_from_a_lora(tmp_path: Path, others) -> None:
    plan = _plan(tmp_path, "Lora1x1A1-AdamW8", 1, lr=10)
    first = train(plan, components=build_tiny_sd())
    second = train(plan, components=build_tiny_sd())
    assert second.output.name == first.output.name.replace(".safetensors", "-1.safetensors")
    assert first.output.is_file()
    cont = _plan(tmp_path, "Lora1x1A1-AdamW8", 1, lr=1, continue_from=str(others["Lora1x1"].output))
    old, _ = load_lora_file(others["Lora1x1"].output)
    new, _ = load_lora_file(train(cont, components=build_tiny_sd()).output)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"
    assert (new[key].float() - old[key].float()).abs().max() < 0.01 < old[key].float().abs().max()
    with pytest.raises(CharframeError, match="same dim"):
        train(cont.updated(dim=8), components=build_tiny_sd())


def test_cli_train_and_train_bat_on_a_fresh_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from charframe.cli import main
    from charframe.testing.tiny_files import save_tiny_sd

    toml = charframe_dataset(tmp_path, n=2, repeats=1, batch=1)
    code = main(["train", str(toml.parent), "--logic", "Lora1x1A1-AdamW8", "--dim", "2", "--lr", "100",
                 "--steps", "1", "--out", "cli"])
    assert code == 0
    assert (tmp_path / "LoRAOutput" / "cli" / "cli-Lora1x1A1-AdamW8-2-100-1.safetensors").is_file()
    assert len(list((tmp_path / "LoRALog").glob("cli-Lora1x1A1-AdamW8-2-100-1*"))) == 1
    save_tiny_sd(tmp_path / "LoRAInput" / "tiny-model")
    monkeypatch.chdir(tmp_path)
    code = main(["train-bat", "LohaA1-AdaFacotor", "2", "100", "1", toml.parent.name, "bat", "tiny-model", "-", "1"])
    assert code == 0
    out = tmp_path / "LoRAOutput" / "bat" / "bat-LohaA1-AdaFacotor-2-100-1.safetensors"
    _, md = load_lora_file(out)
    assert md["ss_sd_model_name"] == "tiny-model" and md["ss_clip_skip"] == "1"
    assert main(["train", str(tmp_path / "LoRAInput"), "--logic", "Lora1x1A1-AdamW8", "--dim", "2", "--lr", "1",
                 "--steps", "1", "--out", "x"]) == 2
    assert "charframe prepare" in capsys.readouterr().err


def test_works_under_accelerate_launch_with_two_processes(tmp_path: Path) -> None:
    """`accelerate launch -m charframe train` with 2 processes (gloo on CPU): one file, one log, one bar."""
    toml = charframe_dataset(tmp_path, n=2, repeats=1, batch=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "charframe", "train", str(toml),
         "--logic", "Lora1x1A1-AdamW8", "--dim", "2", "--lr", "10", "--steps", "2", "--out", "acc"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "LoRAOutput" / "acc"
    assert sorted(p.name for p in out.iterdir()) == [".charframe-train.json", "acc-Lora1x1A1-AdamW8-2-10-2.safetensors",
                                                     "acc-Lora1x1A1-AdamW8-2-10-2.train.toml"]
    assert len(list((tmp_path / "LoRALog").iterdir())) == 1
    assert proc.stderr.count("wrote ") == 1  # only the main process writes
    _, md = load_lora_file(out / "acc-Lora1x1A1-AdamW8-2-10-2.safetensors")
    assert md["ss_total_batch_size"] == "2"  # 2 processes x batch 1


def test_a_crash_leaves_a_resumable_state(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "Lora1x1A1-AdamW8", 4, lr=100)

    def crash(step: int, loss: float) -> None:
        if step == 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        train(plan, components=build_tiny_sd(), on_step=crash)
    from charframe.training.state import load_state

    run, tensors, optim = load_state(find_state(plan.io, plan.output_name))
    assert run.step == 2 and len(run.losses) == 2 and optim["optimizer"]["state"]
    assert train(plan, components=build_tiny_sd(), resume=True).steps_done == 4


def test_noise_offset_changes_the_noise(lora3x3) -> None:
    comps = build_tiny_sd()
    pixels, caps, w = torch.zeros(1, 3, 64, 64), ["krnk"], torch.ones(1)
    losses = []
    for offset in (0.0, 0.5):
        recipe = dataclasses.replace(lora3x3["plan"].recipe, noise_offset=offset)
        with torch.no_grad():
            losses.append(float(denoise_loss(comps, pixels, caps, w, torch.Generator().manual_seed(3), recipe=recipe,
                                             device=torch.device("cpu"), timesteps=torch.tensor([999]))))
    assert losses[0] != losses[1]


def test_bf16_runs_the_mixed_precision_path_on_cpu_and_trains_like_fp32(tmp_path: Path) -> None:
    """The GPU's precision path (frozen weights in low precision, autocast, LoRA kept in fp32, fp16 file)
    also runs on CPU with bf16, with gradient checkpointing; a fp32 and a bf16 run in one process both
    work (accelerate keeps one precision per process) and learn the same direction."""
    files = {}
    for mp in ("no", "bf16", "no"):
        comps = build_tiny_sd()
        plan = _plan(tmp_path / mp, "Lora3x3A50p-AdamW8", 3, lr=1000, mixed_precision=mp)
        result = train(plan, components=comps, checkpointing=True)
        tensors, md = load_lora_file(result.output)
        assert md["ss_mixed_precision"] == mp and md["ss_gradient_checkpointing"] == "True"
        assert comps.unet.dtype == (torch.bfloat16 if mp == "bf16" else torch.float32)
        assert all(np.isfinite(result.losses)) and {t.dtype for t in tensors.values()} == {torch.float16}
        files.setdefault(mp, tensors)
    fp32, bf16 = files["no"], files["bf16"]
    ups = [k for k in fp32 if k.endswith("lora_up.weight") and fp32[k].float().norm() > 0]
    assert len(ups) > 100
    cos = [torch.nn.functional.cosine_similarity(fp32[k].float().flatten(), bf16[k].float().flatten(), dim=0) for k in ups]
    assert float(torch.stack(cos).mean()) > 0.9


def test_the_training_record_says_whether_a_lora_is_up_to_date(tmp_path: Path, capsys) -> None:
    """A finished LoRA is recorded on the same manifest as captions and templates; `train --dry-run` says whether
    it is still what the plan would train: nothing changed, a caption edited (and edited back), the settings."""
    from charframe.cli import main
    from charframe.training.outputs import TRAIN_MANIFEST, output_status, trained_from
    from charframe.util.manifest import Status

    toml = charframe_dataset(tmp_path, n=2, repeats=1, batch=1)
    args = ["train", str(toml.parent), "--logic", "Lora1x1A1-AdamW8", "--dim", "2", "--lr", "100", "--steps", "1",
            "--out", "rec"]

    def dry(*extra: str) -> str:
        capsys.readouterr()
        assert main([*args, *extra, "--dry-run"]) == 0
        return capsys.readouterr().err

    assert "not trained yet" in dry()
    assert main(args) == 0
    lora = tmp_path / "LoRAOutput" / "rec" / "rec-Lora1x1A1-AdamW8-2-100-1.safetensors"
    record = json.loads((lora.parent / TRAIN_MANIFEST).read_text())["outputs"][lora.name]
    inputs, _ = trained_from(make_plan("Lora1x1A1-AdamW8", 2, 100, 1, dataset=toml, out="rec"))
    names = sorted(Path(k).name for k in record["inputs"])
    assert names == sorted(p.name for p in inputs) == ["1_krnk.toml", "f00.png", "f00.txt", "f01.png", "f01.txt"]
    assert "up to date" in dry()
    caption = toml.parent / "krnk girl_f0064" / "f01.txt"
    text = caption.read_text()
    caption.write_text(text + ", smile")
    assert "out of date" in dry()
    caption.write_text(text)  # the same bytes again (a new mtime): up to date by content
    assert "up to date" in dry()
    assert "out of date" in dry("--noise-offset", "0.07")  # a setting that keeps the file name
    assert "up to date" in dry("--sample-every", "1")  # samples do not change the weights
    lora.with_name("rec-Lora1x1A1-AdamW8-2-100-1.safetensors").write_bytes(lora.read_bytes()[:-1] + b" ")
    plan = make_plan("Lora1x1A1-AdamW8", 2, 100, 1, dataset=toml, out="rec", output_dir=str(tmp_path / "LoRAOutput"))
    out_file, status = output_status(plan)
    assert out_file == lora and status is Status.FOREIGN  # replaced by hand: not charframe's record any more
