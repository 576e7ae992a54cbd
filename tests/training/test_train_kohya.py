"""The kohya sd-scripts engine: argument lists for all 16 logics, running, set-up."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from charframe.errors import CharframeError
from charframe.util.files import ENV_CACHE
from charframe.training.engines import kohya
from charframe.training.adapters import lycoris_preset_path
from charframe.training.plan import all_logics, make_plan, parse_logic

SEED_PATHS = dict(
    dataset="..\\LoRAInput\\4_krnk\\4_krnk.toml",
    output_dir="..\\LoRAOutput",
    model="..\\LoRAInput\\Defmix-v2.0.safetensors",
    vae="..\\LoRAInput\\kl-f8-anime2.ckpt",
    logging_dir="..\\LoRALog",
)

# The command of the original LoRA.bat for `Lora3x3A50p-AdamW8 128 100 1200 4_krnk krnk ...`, as a list.
SEED_ARGS = [
    "--network_module=networks.lora",
    "--network_args", "conv_dim=128", "conv_alpha=64",
    "--optimizer_type=AdamW8bit",
    "--learning_rate=100e-6",
    "--text_encoder_lr=44e-6",
    "--lr_scheduler=cosine_with_restarts",
    "--network_dim=128",
    "--network_alpha=64",
    "--dataset_config=..\\LoRAInput\\4_krnk\\4_krnk.toml",
    "--max_train_steps=1200",
    "--output_dir=..\\LoRAOutput\\krnk",
    "--output_name=krnk-Lora3x3A50p-AdamW8-128-100-1200",
    "--pretrained_model_name_or_path=..\\LoRAInput\\Defmix-v2.0.safetensors",
    "--vae=..\\LoRAInput\\kl-f8-anime2.ckpt",
    "--clip_skip=2",
    "--logging_dir=..\\LoRALog",
    "--log_prefix=krnk-Lora3x3A50p-AdamW8-128-100-1200",
    "--xformers",
    "--save_model_as=safetensors",
    "--mixed_precision=fp16",
    "--save_precision=fp16",
    "--gradient_checkpointing",
    "--persistent_data_loader_workers",
    "--seed=31337",
]


def test_seed_command_exactly() -> None:
    plan = make_plan("Lora3x3A50p-AdamW8", 128, 100, 1200, out="krnk", clip_skip=2, attention="xformers", **SEED_PATHS)
    assert kohya.kohya_args(plan) == SEED_ARGS
    default = kohya.kohya_args(make_plan("Lora3x3A50p-AdamW8", 128, 100, 1200, out="krnk", **SEED_PATHS))
    assert default == [("--sdpa" if a == "--xformers" else a) for a in SEED_ARGS]


def _parse(args: list[str]) -> dict:
    """`--k=v` → {k: v}; `--k a b` → {k: [a, b]}; `--flag` → {flag: True}."""
    out: dict = {}
    key = None
    for a in args:
        if a.startswith("--"):
            key, _, value = a[2:].partition("=")
            out[key] = value if value else True
        else:
            out[key] = (out[key] if isinstance(out[key], list) else []) + [a]
    return out


@pytest.mark.parametrize("logic", all_logics())
def test_arguments_follow_the_recipe_table(logic: str) -> None:
    dim, lr = 32, 100
    a = _parse(kohya.kohya_args(make_plan(logic, dim, lr, 1000, out="k", continue_from="old.safetensors", **SEED_PATHS)))
    parts = parse_logic(logic)
    alpha = 1 if parts.alpha == "A1" else dim // 2
    assert a["network_dim"] == str(dim) and a["network_alpha"] == str(alpha)
    net_args = a.get("network_args", [])
    if parts.network == "Lora1x1":
        assert a["network_module"] == "networks.lora" and net_args == []
    elif parts.network == "Lora3x3":
        assert a["network_module"] == "networks.lora" and net_args == [f"conv_dim={dim}", f"conv_alpha={alpha}"]
    else:
        algo = "lora" if parts.network == "Locon" else "loha"
        assert a["network_module"] == "lycoris.kohya"
        assert net_args == [f"conv_dim={dim}", f"conv_alpha={alpha}", f"algo={algo}", f"preset={lycoris_preset_path()}"]
    if parts.optimizer == "AdamW8":
        assert a["optimizer_type"] == "AdamW8bit" and "optimizer_args" not in a
        assert (a["learning_rate"], a["text_encoder_lr"]) == ("100e-6", "44e-6")
        assert a["lr_scheduler"] == "cosine_with_restarts"
    else:
        assert a["optimizer_type"] == "AdaFactor"
        assert a["optimizer_args"] == ["relative_step=True", "scale_parameter=True", "warmup_init=False"]
        assert "learning_rate" not in a and "text_encoder_lr" not in a and a["lr_scheduler"] == "adafactor"
    assert a["network_weights"] == "old.safetensors"
    for flag in ("sdpa", "gradient_checkpointing", "persistent_data_loader_workers"):
        assert a[flag] is True
    assert (a["seed"], a["mixed_precision"], a["save_precision"], a["save_model_as"]) == ("31337", "fp16", "fp16", "safetensors")
    assert a["output_name"] == a["log_prefix"] == f"k-{logic}-{dim}-{lr}-1000"


def test_options_reach_sd_scripts() -> None:
    plan = make_plan("Lora1x1A1-AdamW8", 8, 10, 5, out="k", max_token_length=225, noise_offset=0.05,
                     prior_loss_weight=0.5, **SEED_PATHS)
    a = _parse(kohya.kohya_args(plan))
    assert (a["max_token_length"], a["noise_offset"], a["prior_loss_weight"]) == ("225", "0.05", "0.5")
    with pytest.raises(CharframeError, match="needs a real model"):
        kohya.kohya_args(make_plan("Lora1x1A1-AdamW8", 8, 10, 5, out="k", dataset="d.toml"))


def _checkout(tmp_path: Path, script: str = "") -> kohya.KohyaSetup:
    d = tmp_path / "sd-scripts"
    d.mkdir()
    (d / "train_network.py").write_text(script or "pass\n")
    return kohya.KohyaSetup(d, Path(sys.executable))


def _plan(tmp_path: Path, **kw):
    from train_data import charframe_dataset

    toml = charframe_dataset(tmp_path / "proj")
    return make_plan("LoconA50p-AdamW8", 8, 100, 10, dataset=toml, out="krnk", model=str(tmp_path / "m.safetensors"),
                     output_dir=str(tmp_path / "out"), logging_dir=str(tmp_path / "log"), **kw)


def test_run_kohya_checks_the_file_and_never_overwrites(tmp_path: Path) -> None:
    setup = _checkout(tmp_path)
    plan = _plan(tmp_path)
    calls = []

    def fake(cmd, cwd):
        calls.append((cmd, cwd))
        a = _parse(cmd[cmd.index("train_network.py") + 1 :])
        Path(a["output_dir"], a["output_name"] + ".safetensors").write_bytes(b"x")
        return SimpleNamespace(returncode=0)

    first = kohya.run_kohya(plan, setup, runner=fake)
    assert first.name == "krnk-LoconA50p-AdamW8-8-100-10.safetensors" and first.is_file()
    second = kohya.run_kohya(plan, setup, runner=fake)
    assert second.name == "krnk-LoconA50p-AdamW8-8-100-10-1.safetensors"
    cmd, cwd = calls[0]
    assert cwd == str(setup.dir)
    assert cmd[:6] == [sys.executable, "-m", "accelerate.commands.launch", "--num_cpu_threads_per_process", "1", "train_network.py"]
    assert (first.parent / "krnk-LoconA50p-AdamW8-8-100-10.train.toml").is_file()
    with pytest.raises(CharframeError, match="was not written"):
        kohya.run_kohya(plan, setup, runner=lambda cmd, cwd: SimpleNamespace(returncode=0))
    with pytest.raises(CharframeError, match="exit code 3"):
        kohya.run_kohya(plan, setup, runner=lambda cmd, cwd: SimpleNamespace(returncode=3))


def test_relative_image_dirs_are_made_absolute_for_sd_scripts(tmp_path: Path) -> None:
    from charframe.util import toml as tomlio

    plan = _plan(tmp_path)
    cfg = tomlio.load(plan.io.dataset)
    cfg["datasets"][0]["subsets"][0]["image_dir"] = "krnk girl_f0064"  # relative to the TOML
    tomlio.write(plan.io.dataset, cfg)
    out = tmp_path / "out" / "krnk"
    used = kohya.kohya_dataset_config(plan.io.dataset, _checkout(tmp_path).dir, out, "name")
    assert used == str(out / "name.dataset.toml")
    image_dir = Path(tomlio.load(used)["datasets"][0]["subsets"][0]["image_dir"])
    assert image_dir.is_absolute() and image_dir.name == "krnk girl_f0064" and image_dir.is_dir()


def test_real_accelerate_launch_of_a_checkout(tmp_path: Path) -> None:
    """The command really runs under `accelerate launch` (a stand-in train_network.py writes the file)."""
    script = (
        "import sys, pathlib\n"
        "a = dict(x[2:].split('=', 1) for x in sys.argv[1:] if x.startswith('--') and '=' in x)\n"
        "print('stand-in sd-scripts', a['output_name'])\n"
        "pathlib.Path(a['output_dir'], a['output_name'] + '.safetensors').write_bytes(b'lora')\n"
    )
    setup = _checkout(tmp_path, script)
    out = kohya.run_kohya(_plan(tmp_path), setup)
    assert out.read_bytes() == b"lora"


def test_find_kohya(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kohya.ENV_DIR, raising=False)
    with pytest.raises(CharframeError, match="setup-kohya"):
        kohya.find_kohya(root=tmp_path)
    setup = _checkout(tmp_path)
    py = kohya.venv_python(setup.dir / "venv")
    py.parent.mkdir(parents=True)
    py.write_text("")
    assert kohya.find_kohya(root=tmp_path) == kohya.KohyaSetup(setup.dir.resolve(), py)
    monkeypatch.setenv(kohya.ENV_DIR, str(setup.dir))
    assert kohya.find_kohya(python=sys.executable).python == Path(sys.executable)


def test_setup_kohya_runs_the_readme_steps(tmp_path: Path) -> None:
    calls = []
    setup = kohya.setup_kohya(tmp_path / "sd", runner=lambda cmd, cwd: calls.append(cmd) or SimpleNamespace(returncode=0))
    assert calls[0] == ["git", "clone", kohya.KOHYA_REPO, str(tmp_path / "sd")]
    assert calls[1][1:] == ["-m", "venv", str(tmp_path / "sd" / "venv")]
    flat = [" ".join(c) for c in calls]
    assert any("torch==2.6.0 torchvision==0.21.0 --index-url" in c for c in flat)
    assert any(c.endswith("-r requirements.txt") for c in flat)
    assert any(c.endswith("install lycoris-lora") for c in flat)
    assert any("config default --mixed_precision fp16" in c for c in flat)
    assert setup.python == kohya.venv_python(tmp_path / "sd" / "venv")
    with pytest.raises(CharframeError, match="failed"):
        kohya.setup_kohya(tmp_path / "sd2", runner=lambda cmd, cwd: SimpleNamespace(returncode=1))


def test_cli_dry_run_prints_the_command(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from charframe.cli import main

    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    plan = _plan(tmp_path)
    setup = _checkout(tmp_path)
    code = main(["train", plan.io.dataset, "--logic", "Lora3x3A50p-AdamW8", "--dim", "16", "--lr", "100", "--steps", "7",
                 "--out", "krnk", "--model", str(tmp_path / "m.safetensors"), "--engine", "kohya",
                 "--kohya-dir", str(setup.dir), "--kohya-python", sys.executable, "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "train_network.py" in out and "--output_name=krnk-Lora3x3A50p-AdamW8-16-100-7" in out
    assert "conv_dim=16" in out and "--sdpa" in out
    assert subprocess.list2cmdline([sys.executable]) in out
    assert f"--tokenizer_cache_dir={kohya.tokenizer_cache(write=False)}" in out
    assert not kohya.tokenizer_cache(write=False).exists()  # a dry run writes nothing


def test_sd_scripts_gets_charframes_tokenizer_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts loads `<--tokenizer_cache_dir>/openai_clip-vit-large-patch14` with `from_pretrained`
    instead of asking the hub; the folder charframe writes there tokenizes exactly like the shipped tokenizer."""
    from transformers import CLIPTokenizer

    from charframe.models.tokenizer import clip_tokenizer

    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    seen = []

    def fake(cmd, cwd):
        a = _parse(cmd[cmd.index("train_network.py") + 1 :])
        seen.append(a["tokenizer_cache_dir"])
        Path(a["output_dir"], a["output_name"] + ".safetensors").write_bytes(b"x")
        return SimpleNamespace(returncode=0)

    setup = _checkout(tmp_path)
    kohya.run_kohya(_plan(tmp_path), setup, runner=fake)
    folder = Path(seen[0]) / "openai_clip-vit-large-patch14"
    assert Path(seen[0]) == tmp_path / "cache" / "tokenizers"
    assert (folder / "merges.txt").read_text().startswith("#version: 0.2\n")
    loaded = CLIPTokenizer.from_pretrained(str(folder))
    text = ["krnk girl, white background, from above, 日本語 ÄÖ", "word " * 100]
    kw = dict(padding="max_length", truncation=True, max_length=77)
    assert loaded(text, **kw).input_ids == clip_tokenizer()(text, **kw).input_ids
    assert len(loaded) == 49408 and loaded.pad_token == "<|endoftext|>"
    # a tokenizer already there (e.g. one sd-scripts downloaded itself) is kept
    (folder / "vocab.json").write_text("{}")
    kohya.run_kohya(_plan(tmp_path), setup, runner=fake)
    assert (folder / "vocab.json").read_text() == "{}"


# `Lora1x1A50p-AdamW8 32 100 1000` on an SDXL file (Illustrious-XL), as sdxl_train_network.py gets it: no clip skip,
# the fp16 VAE kept in fp32, the UNet only with the text encoders' outputs cached.
SDXL_ARGS = [
    "--network_module=networks.lora",
    "--optimizer_type=AdamW8bit",
    "--learning_rate=100e-6",
    "--text_encoder_lr=44e-6",
    "--lr_scheduler=cosine_with_restarts",
    "--network_dim=32",
    "--network_alpha=16",
    "--dataset_config=LoRAInput/4_krnk/4_krnk.toml",
    "--max_train_steps=1000",
    "--output_dir=LoRAOutput/krnk",
    "--output_name=krnk-Lora1x1A50p-AdamW8-32-100-1000",
    "--pretrained_model_name_or_path={model}",
    "--logging_dir=LoRALog",
    "--log_prefix=krnk-Lora1x1A50p-AdamW8-32-100-1000",
    "--sdpa",
    "--save_model_as=safetensors",
    "--mixed_precision=fp16",
    "--save_precision=fp16",
    "--no_half_vae",
    "--gradient_checkpointing",
    "--persistent_data_loader_workers",
    "--seed=31337",
    "--network_train_unet_only",
    "--cache_text_encoder_outputs",
]


def _xl_plan(model: Path, **kw):
    return make_plan("Lora1x1A50p-AdamW8", 32, 100, 1000, out="krnk", dataset="LoRAInput/4_krnk/4_krnk.toml",
                     output_dir="LoRAOutput", logging_dir="LoRALog", model=str(model), **kw)


def test_sdxl_plan_drives_sdxl_train_network_exactly(tmp_path: Path) -> None:
    """The family comes from the model file: SDXL runs sdxl_train_network.py with SDXL's arguments; a v-pred file
    (NoobAI's `v_pred` key) or a plan naming v-prediction adds --v_parameterization --zero_terminal_snr; a plan
    that trains the text encoders drops the UNet-only caching; bf16 still keeps the VAE in fp32."""
    from charframe.testing.tiny_files import save_tiny_sdxl_single_file

    model = save_tiny_sdxl_single_file(tmp_path / "illustriousXL_v01.safetensors")
    plan = _xl_plan(model)
    assert kohya.kohya_args(plan) == [a.format(model=model) for a in SDXL_ARGS]
    assert kohya.kohya_command(plan, kohya.KohyaSetup(tmp_path, Path(sys.executable)))[5] == "sdxl_train_network.py"
    vpred = save_tiny_sdxl_single_file(tmp_path / "noobaiXLVpred10.safetensors", v_pred=True)
    assert kohya.kohya_args(_xl_plan(vpred))[-2:] == ["--v_parameterization", "--zero_terminal_snr"]
    assert kohya.kohya_args(_xl_plan(model, prediction="v_prediction"))[-2:] == ["--v_parameterization",
                                                                                 "--zero_terminal_snr"]
    assert kohya.kohya_args(_xl_plan(vpred, prediction="epsilon"))[-1] == "--cache_text_encoder_outputs"
    with_te = kohya.kohya_args(_xl_plan(model, train_text_encoder=True))
    assert "--network_train_unet_only" not in with_te and "--cache_text_encoder_outputs" not in with_te
    bf16 = kohya.kohya_args(_xl_plan(model, mixed_precision="bf16"))
    assert "--mixed_precision=bf16" in bf16 and "--no_half_vae" in bf16
    # a plan naming the family (the pipeline's, for a .ckpt not read yet) without a readable file
    named = make_plan("Lora1x1A50p-AdamW8", 32, 100, 1000, out="krnk", dataset="d.toml", model="x.ckpt", family="sdxl")
    assert "--clip_skip=2" not in kohya.kohya_args(named) and kohya.kohya_script(named) == "sdxl_train_network.py"
    # SD1.x keeps its command, and names its UNet-only runs too
    sd = _parse(kohya.kohya_args(make_plan("Lora1x1A1-AdamW8", 8, 10, 5, out="k", train_text_encoder=False,
                                           **SEED_PATHS)))
    assert sd["clip_skip"] == "2" and "network_train_unet_only" in sd and "cache_text_encoder_outputs" not in sd


def test_run_kohya_on_sdxl_writes_both_tokenizers_and_needs_the_script(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts' SDXL loads `openai/clip-vit-large-patch14` and `laion/CLIP-ViT-bigG-14-laion2B-39B-b160k` from
    the cache folder: both are written (the second padding with "!", OpenCLIP's pad, id 0); a checkout without
    sdxl_train_network.py is refused naming it."""
    from transformers import CLIPTokenizer

    from charframe.testing.tiny_files import save_tiny_sdxl_single_file
    from train_data import charframe_dataset

    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    setup = _checkout(tmp_path)
    model = save_tiny_sdxl_single_file(tmp_path / "ponyDiffusionV6XL.safetensors")
    plan = make_plan("Lora1x1A50p-AdamW8", 4, 100, 10, dataset=charframe_dataset(tmp_path / "proj"), out="krnk",
                     model=str(model), output_dir=str(tmp_path / "out"), logging_dir=str(tmp_path / "log"))
    with pytest.raises(CharframeError, match=r"sd-scripts: this sd-scripts checkout has no sdxl_train_network.py "
                                             r"\(SDXL models need it\)"):
        kohya.run_kohya(plan, setup)
    (setup.dir / "sdxl_train_network.py").write_text("pass\n")
    seen = []

    def fake(cmd, cwd):
        seen.append(cmd)
        a = _parse(cmd[cmd.index("sdxl_train_network.py") + 1 :])
        Path(a["output_dir"], a["output_name"] + ".safetensors").write_bytes(b"x")
        return SimpleNamespace(returncode=0)

    out = kohya.run_kohya(plan, setup, runner=fake)
    assert out.name == "krnk-Lora1x1A50p-AdamW8-4-100-10.safetensors"
    cache = tmp_path / "cache" / "tokenizers"
    assert f"--tokenizer_cache_dir={cache}" in seen[0]
    first = CLIPTokenizer.from_pretrained(str(cache / "openai_clip-vit-large-patch14"))
    second = CLIPTokenizer.from_pretrained(str(cache / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"))
    assert (first.pad_token, second.pad_token, second.pad_token_id) == ("<|endoftext|>", "!", 0)
    text = "krnk girl, white background"
    assert first(text).input_ids == second(text).input_ids


def test_kohya_refuses_a_model_of_another_family_or_without_its_text_encoders(tmp_path: Path) -> None:
    """Nothing loads the model before sd-scripts does, so its header is checked here: an SD1.x file for a plan
    (character file) that says SDXL, and a Pony file shared without its OpenCLIP encoder → one line naming it."""
    from charframe.testing.tiny_files import save_tiny_sdxl_single_file, save_tiny_single_file

    sd = save_tiny_single_file(tmp_path / "anything-v5.safetensors")
    with pytest.raises(CharframeError, match=r"anything-v5.safetensors: is an SD1.x checkpoint but family says "
                                             r"SDXL; give an SDXL model or set the family to sd15"):
        kohya.kohya_args(make_plan("Lora1x1A1-AdamW8", 4, 1, 1, out="k", dataset="d.toml", model=str(sd), family="sdxl"))
    pony = save_tiny_sdxl_single_file(tmp_path / "ponyDiffusionV6XL.safetensors", drop=("conditioner.embedders.1.",))
    with pytest.raises(CharframeError, match=r"ponyDiffusionV6XL.safetensors: SDXL UNet found but no OpenCLIP ViT-bigG "
                                             r"text encoder weights"):
        kohya.kohya_args(_xl_plan(pony))


def test_a_checkout_without_its_python_is_one_line_naming_the_option(tmp_path: Path) -> None:
    (tmp_path / "sd-scripts").mkdir()
    (tmp_path / "sd-scripts" / "train_network.py").write_text("", encoding="utf-8")
    with pytest.raises(CharframeError, match=r"python of the sd-scripts checkout not found; pass it with kohya_python"):
        kohya.find_kohya(tmp_path / "sd-scripts")
