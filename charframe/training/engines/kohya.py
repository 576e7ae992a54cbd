"""The external engine: the same plan run by a kohya sd-scripts checkout (`train_network.py`).

`kohya_args` turns a `TrainPlan` into exactly the `train_network.py` arguments the original batch file
passed (CONVENTIONS §6), in the same order; `--sdpa` replaces `--xformers` by default because current
sd-scripts supports PyTorch's own memory-efficient attention and xformers wheels often lag behind.
Locon/Loha add the LyCORIS preset charframe ships, so both engines train the same layers.
`setup_kohya` performs sd-scripts' documented installation (clone, venv, torch, requirements,
lycoris-lora, a default accelerate config).

sd-scripts downloads its CLIP tokenizer from the Hugging Face hub on every SD1.x run; `run_kohya` points
its `--tokenizer_cache_dir` at a copy of charframe's shipped tokenizer (same token ids), so the external
engine runs offline too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

from charframe.util import toml as tomlio
from charframe.errors import CharframeError
from charframe.training.plan import TrainPlan
from charframe.util.files import user_cache_dir
from charframe.models.tokenizer import HUB_ID, write_tokenizer_files
from charframe.training.data import _resolve_dir
from charframe.util.files import free_output_path
from charframe.training.adapters import lycoris_preset_path

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
            f"or pass --kohya-dir (or set {ENV_DIR})"
        )
    py = Path(python or config.get("python") or venv_python(chosen / "venv"))
    if not py.is_file():
        raise CharframeError(f"{py}: python of the sd-scripts checkout not found; pass --kohya-python")
    return KohyaSetup(chosen.resolve(), py)


def kohya_args(plan: TrainPlan, *, dataset_config: str | None = None, output_name: str | None = None,
               tokenizer_cache_dir: str | None = None) -> list[str]:
    """`train_network.py` arguments for `plan` (paths used exactly as the plan holds them)."""
    a: list[str] = [f"--network_module={plan.network_module}"]
    net_args = [f"{k}={v}" for k, v in plan.network_args.items()]
    if plan.network_module.startswith("lycoris"):

        net_args.append(f"preset={lycoris_preset_path()}")
    if net_args:
        a += ["--network_args", *net_args]
    a.append(f"--optimizer_type={plan.optimizer_type}")
    if plan.optimizer_args:
        a += ["--optimizer_args", *(f"{k}={_py(v)}" for k, v in plan.optimizer_args.items())]
    if plan.explicit_lr:
        a += [f"--learning_rate={plan.lr}e-6", f"--text_encoder_lr={plan.text_encoder_lr_count}e-6"]
    a.append(f"--lr_scheduler={plan.lr_scheduler}")
    if plan.lr_scheduler == "cosine_with_restarts" and plan.lr_scheduler_num_cycles != 1:
        a.append(f"--lr_scheduler_num_cycles={plan.lr_scheduler_num_cycles}")
    a += [f"--network_dim={plan.dim}", f"--network_alpha={plan.network_alpha}"]
    a.append(f"--dataset_config={dataset_config or plan.dataset}")
    a.append(f"--max_train_steps={plan.steps}")
    a.append(f"--output_dir={_join(plan.output_dir, plan.out)}")
    name = output_name or plan.output_name
    a.append(f"--output_name={name}")
    if plan.model is None:
        raise CharframeError("the kohya engine needs a real model: pass --model (the tiny demo model is built-in only)")
    a.append(f"--pretrained_model_name_or_path={plan.model}")
    if plan.vae:
        a.append(f"--vae={plan.vae}")
    a.append(f"--clip_skip={plan.clip_skip}")
    if plan.continue_from:
        a.append(f"--network_weights={plan.continue_from}")
    a += [f"--logging_dir={plan.logging_dir}", f"--log_prefix={name}"]
    a.append("--xformers" if plan.attention == "xformers" else "--sdpa")
    a += [f"--save_model_as={plan.save_model_as}", f"--mixed_precision={plan.mixed_precision}",
          f"--save_precision={plan.save_precision}"]
    if plan.gradient_checkpointing:
        a.append("--gradient_checkpointing")
    if plan.persistent_data_loader_workers:
        a.append("--persistent_data_loader_workers")
    a.append(f"--seed={plan.seed}")
    if plan.max_token_length:
        a.append(f"--max_token_length={plan.max_token_length}")
    if plan.noise_offset:
        a.append(f"--noise_offset={plan.noise_offset}")
    if plan.prior_loss_weight != 1.0:
        a.append(f"--prior_loss_weight={plan.prior_loss_weight}")
    if plan.max_grad_norm != 1.0:
        a.append(f"--max_grad_norm={plan.max_grad_norm}")
    if tokenizer_cache_dir:
        a.append(f"--tokenizer_cache_dir={tokenizer_cache_dir}")
    if plan.sample_every and plan.sample_prompts:
        a += [f"--sample_every_n_steps={plan.sample_every}", "--sample_sampler=ddim",
              f"--sample_prompts={_join(_join(plan.output_dir, plan.out), 'sample_prompts.txt')}"]
    return a


def _join(folder: str, name: str) -> str:
    """folder/name, keeping Windows separators when the folder was written with them."""
    return str((PureWindowsPath if "\\" in folder else Path)(folder) / name)


def _py(value: Any) -> str:
    """A value as Python source, the form sd-scripts' `--optimizer_args key=value` evaluates."""
    return repr(value)


def kohya_command(plan: TrainPlan, setup: KohyaSetup, **kw: Any) -> list[str]:
    """The full command: `accelerate launch --num_cpu_threads_per_process 1 train_network.py …` in the venv."""
    return [str(setup.python), "-m", "accelerate.commands.launch", "--num_cpu_threads_per_process", "1",
            "train_network.py", *kohya_args(plan, **kw)]


def tokenizer_cache(write: bool = True) -> Path:
    """A `--tokenizer_cache_dir` holding SD1.x's CLIP tokenizer where sd-scripts looks for it
    (`<dir>/openai_clip-vit-large-patch14`), written from the shipped data once; an existing one is kept.
    `write=False` only names the folder (for --dry-run)."""

    root = user_cache_dir() / "tokenizers"
    folder = root / HUB_ID.replace("/", "_")
    if write and not (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file():
        write_tokenizer_files(folder)
        log.info("wrote the CLIP tokenizer for sd-scripts to %s", folder)
    return root


def kohya_dataset_config(plan: TrainPlan, cwd: Path, out_dir: Path, name: str) -> str:
    """The dataset TOML sd-scripts should read. It resolves image_dir from its own working folder,
    so a TOML with paths relative to itself is copied with absolute paths beside the output."""

    src = Path(plan.dataset).absolute()
    cfg = tomlio.load(src)
    changed = False
    for ds in cfg.get("datasets", []):
        for sub in ds.get("subsets", []):
            raw = str(sub.get("image_dir", ""))
            if raw and not (cwd / raw.replace("\\", "/")).is_dir() and not Path(raw).is_absolute():
                sub["image_dir"] = str(_resolve_dir(raw, src))
                changed = True
    if not changed:
        return str(src)
    copy = out_dir / f"{name}.dataset.toml"
    tomlio.write(copy, cfg)
    log.info("sd-scripts reads image_dir from %s: wrote %s with absolute paths", cwd, copy)
    return str(copy)


def run_kohya(plan: TrainPlan, setup: KohyaSetup, *, runner: Callable[..., Any] = subprocess.run) -> Path:
    """Run sd-scripts on `plan` with its live output; return the LoRA file it wrote."""

    out_dir = (Path(plan.output_dir) / plan.out).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = free_output_path(out_dir / f"{plan.output_name}.{plan.save_model_as}")
    if target.stem != plan.output_name:
        log.warning("%s exists; sd-scripts will write %s instead (nothing is overwritten)", plan.output_name, target.name)
    if plan.sample_every and plan.sample_prompts:
        lines = [f"{p} --w {plan.sample_size} --h {plan.sample_size} --s {plan.sample_steps} --d {seed}"
                 for p in plan.sample_prompts for seed in plan.sample_seeds]
        (out_dir / "sample_prompts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = kohya_dataset_config(plan, setup.dir, out_dir, target.stem)
    cmd = kohya_command(plan, setup, dataset_config=dataset, output_name=target.stem,
                        tokenizer_cache_dir=str(tokenizer_cache()))
    log.info("running sd-scripts in %s:\n  %s", setup.dir, subprocess.list2cmdline(cmd))
    plan.save(out_dir / f"{target.stem}.train.toml")
    proc = runner(cmd, cwd=str(setup.dir))
    if proc.returncode != 0:
        raise CharframeError(f"sd-scripts failed (exit code {proc.returncode}); see its output above", exit_code=proc.returncode)
    if not target.is_file():
        raise CharframeError(f"sd-scripts finished but {target} was not written; see its output above")
    log.info("wrote %s", target)
    return target


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
