"""The external engine: the same plan run by a kohya sd-scripts checkout (`train_network.py` for SD1.x,
`sdxl_train_network.py` for SDXL: the script and the family's own arguments come from `[kohya]` of
`data/families/<id>.toml`).

`kohya_args` turns a `TrainPlan` into exactly the `train_network.py` arguments the original batch file
passed (CONVENTIONS §6), in the same order; `--sdpa` replaces `--xformers` by default because current
sd-scripts supports PyTorch's own memory-efficient attention and xformers wheels often lag behind.
Locon/Loha add the LyCORIS preset charframe ships, so both engines train the same layers.
`setup_kohya` performs sd-scripts' documented installation (clone, venv, torch, requirements,
lycoris-lora, a default accelerate config).

sd-scripts downloads its CLIP tokenizer(s) from the Hugging Face hub on every run; `run_kohya` points its
`--tokenizer_cache_dir` at copies of charframe's shipped tokenizer (same token ids; SDXL's second one with
OpenCLIP's pad token), so the external engine runs offline too.

SDXL runs add what sd-scripts' SDXL runs use: no `--clip_skip` (it does not apply), `--no_half_vae` in half
precision (the original SDXL VAE overflows in fp16), `--network_train_unet_only --cache_text_encoder_outputs` when
the text encoders are not trained (the family's default), and `--v_parameterization --zero_terminal_snr` for a
v-prediction model (NoobAI-XL v-pred: the file's `v_pred` key, or the plan's `prediction`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

from charframe.dataset.schema import read_dataset_file
from charframe.errors import CharframeError
from charframe.families.family import Family, get_family
from charframe.models.checkpoint import SAFETENSORS_SUFFIXES, key_shapes
from charframe.models.detect import check_single_file, run_family
from charframe.models.tokenizer import HUB_ID, write_tokenizer_files
from charframe.training.adapters import lycoris_preset_path
from charframe.training.data import resolve_image_dir
from charframe.training.outputs import check_output_locations, plan_path_for, record_output
from charframe.training.plan import TrainPlan, trains_text_encoder
from charframe.training.result import TrainResult
from charframe.util import toml as tomlio
from charframe.util.files import free_output_path, user_cache_dir

log = logging.getLogger(__name__)

KOHYA_REPO = "https://github.com/kohya-ss/sd-scripts.git"
DEFAULT_DIR_NAME = "sd-scripts"
TORCH_PACKAGES = ("torch==2.6.0", "torchvision==0.21.0")  # the versions sd-scripts' README installs
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cu124"
ENV_DIR = "CHARFRAME_KOHYA_DIR"


@dataclass(frozen=True)
class KohyaSetup:
    dir: Path
    python: Path


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_kohya(directory: str | os.PathLike | None = None, python: str | os.PathLike | None = None,
               root: str | os.PathLike | None = None) -> KohyaSetup:
    """The checkout from `directory`, $CHARFRAME_KOHYA_DIR, charframe.toml `[kohya] dir`, or `<root>/sd-scripts`."""
    config: dict[str, Any] = {}
    if root is not None and (Path(root) / "charframe.toml").is_file():
        config = tomlio.load(Path(root) / "charframe.toml").get("kohya", {})
    candidates = [directory, os.environ.get(ENV_DIR), config.get("dir"), Path(root) / DEFAULT_DIR_NAME if root else None]
    chosen = next((Path(c).expanduser() for c in candidates if c), None)
    if chosen is None or not (chosen / "train_network.py").is_file():
        where = chosen or (Path(root or ".") / DEFAULT_DIR_NAME)
        raise CharframeError(
            f"{where}: no sd-scripts checkout (train_network.py missing); run `charframe setup-kohya` "
            f"or pass the checkout with {{param}} (or set {ENV_DIR})", param="kohya_dir"
        )
    py = Path(python or config.get("python") or venv_python(chosen / "venv"))
    if not py.is_file():
        raise CharframeError(f"{py}: python of the sd-scripts checkout not found; pass it with {{param}}", param="kohya_python")
    return KohyaSetup(chosen.resolve(), py)


def plan_family(plan: TrainPlan) -> Family:
    """The family of the plan's base model (its file's or folder's, else the plan's `family`, else SD1.x). A
    `.safetensors` file is checked as loading would check it (nothing loads it here before sd-scripts does): of
    the plan's family, with every text encoder its family has."""
    model = Path(plan.io.model) if plan.io.model else None
    if model is not None and model.is_file() and model.suffix.lower() in SAFETENSORS_SUFFIXES:
        return get_family(check_single_file(model, key_shapes(model), plan.io.family).family)
    fam = run_family(model, plan.io.family)
    if plan.io.family and get_family(plan.io.family).id != fam.id:
        raise CharframeError(f"{model}: is an {fam.name} model folder but {{param}} says {get_family(plan.io.family).name}; "
                             f"give an {get_family(plan.io.family).name} model or set the family to {fam.id}",
                             param="family")
    return fam


def kohya_table(fam: Family) -> dict[str, Any]:
    """`[kohya]` of the family's data file: its script and the arguments its runs add."""
    table = fam.data.get("kohya")
    if not table:
        raise CharframeError(f"{fam.name} models: the kohya engine does not drive sd-scripts for them yet; "
                             "train with the built-in engine")
    return dict(table)


def plan_prediction(plan: TrainPlan) -> str:
    """"v_prediction" or "epsilon": the plan's `prediction`, else the model's (a single file's v-pred key, a
    diffusers folder's scheduler config)."""
    if plan.io.prediction:
        return plan.io.prediction
    model = Path(plan.io.model) if plan.io.model else None
    if model is None or not model.exists():
        return "epsilon"
    fam = plan_family(plan)
    if model.is_dir():
        config = model / "scheduler" / "scheduler_config.json"
        data = _read_json(config)
        return str(data.get("prediction_type", fam.prediction_type))
    if model.suffix.lower() in SAFETENSORS_SUFFIXES and any(k in fam.v_pred_keys for k in key_shapes(model)):
        return "v_prediction"
    return fam.prediction_type


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def kohya_args(plan: TrainPlan, *, dataset_config: str | None = None, output_name: str | None = None,
               tokenizer_cache_dir: str | None = None) -> list[str]:
    """The sd-scripts script's arguments for `plan` (paths used exactly as the plan holds them)."""
    net, opt, recipe, io, rt = plan.network, plan.optimizer, plan.recipe, plan.io, plan.runtime
    fam = plan_family(plan)
    table = kohya_table(fam)
    a: list[str] = [f"--network_module={net.module}"]
    net_args = [f"{k}={v}" for k, v in net.args.items()]
    if net.module.startswith("lycoris"):
        net_args.append(f"preset={lycoris_preset_path()}")
    if net_args:
        a += ["--network_args", *net_args]
    a.append(f"--optimizer_type={opt.type}")
    if opt.args:
        a += ["--optimizer_args", *(f"{k}={_py(v)}" for k, v in opt.args.items())]
    if opt.explicit_lr:
        a += [f"--learning_rate={opt.lr}e-6", f"--text_encoder_lr={opt.text_encoder_lr_count}e-6"]
    a.append(f"--lr_scheduler={opt.scheduler}")
    if opt.scheduler == "cosine_with_restarts" and opt.scheduler_cycles != 1:
        a.append(f"--lr_scheduler_num_cycles={opt.scheduler_cycles}")
    a += [f"--network_dim={net.dim}", f"--network_alpha={net.alpha}"]
    a.append(f"--dataset_config={dataset_config or io.dataset}")
    a.append(f"--max_train_steps={recipe.steps}")
    a.append(f"--output_dir={_join(io.output_dir, io.out)}")
    name = output_name or plan.output_name
    a.append(f"--output_name={name}")
    if io.model is None:
        raise CharframeError("the kohya engine needs a real model: pass one with {param} "
                             "(the tiny demo model is built-in only)", param="model")
    a.append(f"--pretrained_model_name_or_path={io.model}")
    if io.vae:
        a.append(f"--vae={io.vae}")
    if table.get("clip_skip", True):
        a.append(f"--clip_skip={recipe.clip_skip}")
    if io.continue_from:
        a.append(f"--network_weights={io.continue_from}")
    a += [f"--logging_dir={io.logging_dir}", f"--log_prefix={name}"]
    a.append("--xformers" if rt.attention == "xformers" else "--sdpa")
    a += [f"--save_model_as={io.save_model_as}", f"--mixed_precision={rt.mixed_precision}",
          f"--save_precision={io.save_precision}"]
    if table.get("no_half_vae") and rt.mixed_precision != "no":
        a.append("--no_half_vae")
    if rt.gradient_checkpointing:
        a.append("--gradient_checkpointing")
    if rt.persistent_data_loader_workers:
        a.append("--persistent_data_loader_workers")
    a.append(f"--seed={recipe.seed}")
    if recipe.max_token_length:
        a.append(f"--max_token_length={recipe.max_token_length}")
    if recipe.noise_offset:
        a.append(f"--noise_offset={recipe.noise_offset}")
    if recipe.prior_loss_weight != 1.0:
        a.append(f"--prior_loss_weight={recipe.prior_loss_weight}")
    if opt.max_grad_norm != 1.0:
        a.append(f"--max_grad_norm={opt.max_grad_norm}")
    if not trains_text_encoder(plan.recipe, fam):
        a.append("--network_train_unet_only")
        if table.get("cache_text_encoder_outputs"):
            a.append("--cache_text_encoder_outputs")
    if plan_prediction(plan) == "v_prediction":
        a += ["--v_parameterization", "--zero_terminal_snr"]
    if tokenizer_cache_dir:
        a.append(f"--tokenizer_cache_dir={tokenizer_cache_dir}")
    if plan.state.checkpoint_every:  # sd-scripts names them <name>-step00000500, with their states for --resume
        a += [f"--save_every_n_steps={plan.state.checkpoint_every}", "--save_state"]
    if plan.sampling.enabled:
        a += [f"--sample_every_n_steps={plan.sampling.every}", "--sample_sampler=ddim",
              f"--sample_prompts={_join(_join(io.output_dir, io.out), 'sample_prompts.txt')}"]
    return a


def _join(folder: str, name: str) -> str:
    """folder/name, keeping Windows separators when the folder was written with them."""
    return str((PureWindowsPath if "\\" in folder else Path)(folder) / name)


def _py(value: Any) -> str:
    """A value as Python source, the form sd-scripts' `--optimizer_args key=value` evaluates."""
    return repr(value)


def kohya_script(plan: TrainPlan) -> str:
    """The sd-scripts script that trains the plan's family (`train_network.py`, `sdxl_train_network.py`)."""
    return str(kohya_table(plan_family(plan))["script"])


def kohya_command(plan: TrainPlan, setup: KohyaSetup, **kw: Any) -> list[str]:
    """The full command: `accelerate launch --num_cpu_threads_per_process 1 <script> …` in the venv."""
    return [str(setup.python), "-m", "accelerate.commands.launch", "--num_cpu_threads_per_process", "1",
            kohya_script(plan), *kohya_args(plan, **kw)]


def tokenizer_cache(write: bool = True, fam: Family | None = None) -> Path:
    """A `--tokenizer_cache_dir` holding the family's tokenizers where sd-scripts looks for them
    (`<dir>/openai_clip-vit-large-patch14`, and for SDXL `<dir>/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k`: the
    same vocabulary, its own pad token), written from the shipped data once; an existing one is kept.
    `write=False` only names the folder (for --dry-run)."""
    fam = fam or get_family()
    root = user_cache_dir() / "tokenizers"
    hub_ids = fam.data.get("kohya", {}).get("tokenizers", [HUB_ID])
    for hub_id, te in zip(hub_ids, fam.text_encoders):
        folder = root / hub_id.replace("/", "_")
        if write and not (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file():
            write_tokenizer_files(folder, pad_token=te.pad_token)
            log.info("wrote the %s tokenizer for sd-scripts to %s", te.describe, folder)
    return root


def kohya_dataset_config(dataset: str | os.PathLike, cwd: Path, out_dir: Path, name: str) -> str:
    """The dataset TOML sd-scripts should read. It resolves image_dir from its own working folder,
    so a TOML with paths relative to itself is copied with absolute paths beside the output."""
    src = Path(dataset).absolute()
    cfg = tomlio.load(src)
    changed = False
    for ds in cfg.get("datasets", []):
        for sub in ds.get("subsets", []):
            raw = str(sub.get("image_dir", ""))
            if raw and not (cwd / raw.replace("\\", "/")).is_dir() and not Path(raw).is_absolute():
                sub["image_dir"] = str(resolve_image_dir(raw, src))
                changed = True
    if not changed:
        return str(src)
    copy = out_dir / f"{name}.dataset.toml"
    tomlio.write(copy, cfg)
    log.info("sd-scripts reads image_dir from %s: wrote %s with absolute paths", cwd, copy)
    return str(copy)


def run_kohya(plan: TrainPlan, setup: KohyaSetup, *, runner: Callable[..., Any] = subprocess.run) -> Path:
    """Run sd-scripts on `plan` with its live output; return the LoRA file it wrote."""

    fam = plan_family(plan)
    script = kohya_script(plan)
    if not (setup.dir / script).is_file():
        raise CharframeError(f"{setup.dir}: this sd-scripts checkout has no {script} ({fam.name} models need it); "
                             "update it (git pull) or run `charframe setup-kohya` again")
    out_dir = (Path(plan.io.output_dir) / plan.io.out).absolute()
    target = free_output_path(out_dir / f"{plan.output_name}.{plan.io.save_model_as}")
    check_output_locations(plan.io, target, samples=plan.sampling.enabled)
    out_dir.mkdir(parents=True, exist_ok=True)
    if target.stem != plan.output_name:
        log.warning("%s exists; sd-scripts will write %s instead (nothing is overwritten)", plan.output_name, target.name)
    sampling = plan.sampling
    if sampling.enabled:
        lines = [f"{p} --w {sampling.size} --h {sampling.size} --s {sampling.steps} --d {seed}"
                 for p in sampling.prompts for seed in sampling.seeds]
        (out_dir / "sample_prompts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = kohya_dataset_config(plan.io.dataset, setup.dir, out_dir, target.stem)
    cmd = kohya_command(plan, setup, dataset_config=dataset, output_name=target.stem,
                        tokenizer_cache_dir=str(tokenizer_cache(fam=fam)))
    log.info("running sd-scripts in %s:\n  %s", setup.dir, subprocess.list2cmdline(cmd))
    proc = runner(cmd, cwd=str(setup.dir))
    if proc.returncode != 0:
        raise CharframeError(f"sd-scripts failed (exit code {proc.returncode}); see its output above", exit_code=proc.returncode)
    if not target.is_file():
        raise CharframeError(f"sd-scripts finished but {target} was not written; see its output above")
    plan.save(plan_path_for(target))  # only beside a LoRA that exists, as the built-in engine does
    record_output(plan, target)
    log.info("wrote %s", target)
    return target


class KohyaEngine:
    """A kohya sd-scripts checkout behind the `Engine` protocol (it restarts runs; it cannot resume them)."""

    name = "kohya"
    can_resume = False

    def __init__(self, setup: KohyaSetup, runner: Callable[..., Any] = subprocess.run) -> None:
        self.setup, self.runner = setup, runner

    def run(self, plan: TrainPlan, *, resume: bool = False, **kw: Any) -> TrainResult:
        if resume:
            raise CharframeError("{param} works with the built-in engine; sd-scripts restarts the run", param="resume")
        out = run_kohya(plan, self.setup, runner=self.runner)
        return TrainResult(out, [], plan.recipe.steps, None)

    def describe(self, plan: TrainPlan) -> str:
        """What a dry run prints: the sd-scripts command line (nothing is written)."""
        read_dataset_file(plan.io.dataset)
        cache = str(tokenizer_cache(write=False, fam=plan_family(plan)))
        return subprocess.list2cmdline(kohya_command(plan, self.setup, tokenizer_cache_dir=cache))


def setup_commands(dest: Path, base_python: str = sys.executable, *, torch_packages: tuple[str, ...] = TORCH_PACKAGES,
                   torch_index_url: str | None = TORCH_INDEX_URL) -> list[tuple[list[str], Path | None]]:
    """The installation steps of sd-scripts' README as (command, working folder) pairs."""
    py = str(venv_python(dest / "venv"))
    steps: list[tuple[list[str], Path | None]] = []
    if not (dest / ".git").is_dir():
        steps.append((["git", "clone", KOHYA_REPO, str(dest)], None))
    steps.append(([base_python, "-m", "venv", str(dest / "venv")], dest))
    steps.append(([py, "-m", "pip", "install", "--upgrade", "pip"], dest))
    torch_cmd = [py, "-m", "pip", "install", *torch_packages]
    steps.append((torch_cmd + (["--index-url", torch_index_url] if torch_index_url else []), dest))
    steps.append(([py, "-m", "pip", "install", "--upgrade", "-r", "requirements.txt"], dest))
    steps.append(([py, "-m", "pip", "install", "lycoris-lora"], dest))
    steps.append(([py, "-m", "accelerate.commands.accelerate_cli", "config", "default", "--mixed_precision", "fp16"], dest))
    return steps


def setup_kohya(dest: str | os.PathLike, *, runner: Callable[..., Any] = subprocess.run, **kw: Any) -> KohyaSetup:
    """Clone and install sd-scripts into `dest` (needs internet); idempotent for an existing clone."""
    dest = Path(dest).absolute()
    for cmd, cwd in setup_commands(dest, **kw):
        log.info("$ %s", subprocess.list2cmdline(cmd))
        proc = runner(cmd, cwd=str(cwd) if cwd else None)
        if proc.returncode != 0:
            raise CharframeError(f"setup-kohya: `{subprocess.list2cmdline(cmd)}` failed (exit {proc.returncode}); "
                                 "fix the problem shown above and run setup-kohya again")
    return KohyaSetup(dest, venv_python(dest / "venv"))
