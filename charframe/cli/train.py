"""`charframe train`, `charframe train-bat` and `charframe setup-kohya`: thin wrappers over charframe.training."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from charframe.errors import CharframeError  # light: no heavy imports

log = logging.getLogger("charframe.cli.train")

TRAIN_EPILOG = """\
examples:
  charframe train LoRAInput/4_krnk --logic Lora3x3A50p-AdamW8 --dim 128 --lr 100 --steps 1000 \\
      --out krnk --model LoRAInput/Defmix-v2.0.safetensors --vae LoRAInput/kl-f8-anime2.ckpt
  charframe train LoRAInput/4_krnk --logic LohaA50p-AdamW8 --dim 32 --lr 100 --steps 1000 --out krnk  # tiny demo model
  charframe train LoRAInput/4_krnk ... --resume          # continue after Ctrl-C / a crash
  accelerate launch -m charframe train LoRAInput/4_krnk ...   # several GPUs
  charframe train LoRAInput/4_krnk ... --model LoRAInput/illustriousXL_v01.safetensors --min-snr-gamma 5
      # SDXL (Illustrious, NoobAI, Pony): UNet only by default, time ids from each image's size and bucket

logic = (Lora3x3|Lora1x1|Locon|Loha)(A1|A50p)-(AdamW8|AdaFactor); lr is a count of 1e-6 (100 = 1e-4).
families: SD1.x and SDXL models train with both engines (--engine kohya: train_network.py for SD1.x,
  sdxl_train_network.py for SDXL, UNet only with cached text-encoder outputs, v-pred flags from the model).
writes LoRAOutput/<out>/<out>-<logic>-<dim>-<lr>-<steps>.safetensors (+ .train.toml with the plan),
TensorBoard logs to LoRALog/<out>-<logic>-<dim>-<lr>-<steps><time>/.
"""

BAT_EPILOG = """\
the argument order of the original LoRA.bat; names are resolved as it did:
  IN    dataset folder in LoRAInput/ (its IN.toml)     OUT   output name (LoRAOutput/OUT/)
  MODEL / VAE  files in LoRAInput/ (VAE "-" = none)   LORA  file in LoRAOutput/OUT/ to continue from
example:
  charframe train-bat Lora3x3A50p-AdamW8 128 100 1000 4_krnk krnk Defmix-v2.0.safetensors kl-f8-anime2.ckpt 2
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine and options")
    g.add_argument("--engine", choices=("builtin", "kohya"), default="builtin",
                   help="builtin: charframe's own trainer (default); kohya: an sd-scripts checkout")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its saved state")
    g.add_argument("--max-token-length", type=int, choices=(150, 225), help="captions longer than 75 tokens (SD1.x)")
    g.add_argument("--family", help="model family the model must be: sd15 or sdxl (aliases: illustrious, noobai, "
                                    "pony); also picks the tiny demo model's (default: the model's own)")
    g.add_argument("--prediction", choices=("epsilon", "v_prediction"),
                   help="override the model's prediction type (NoobAI-XL v-pred files say so themselves)")
    g.add_argument("--train-text-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="train the text encoders too (default: the family's: SD1.x yes, SDXL no)")
    g.add_argument("--min-snr-gamma", type=float, default=0.0, metavar="G", help="min-SNR weighting (e.g. 5); default off")
    g.add_argument("--debiased-estimation", action="store_true", help="sd-scripts' debiased estimation loss weighting")
    g.add_argument("--mixed-precision", choices=("fp16", "bf16", "no"), help="precision (default fp16, the recipe's; on a CPU fp16 falls back to fp32, bf16 runs)")
    g.add_argument("--attention", choices=("sdpa", "xformers"), help="attention kernel (default sdpa)")
    g.add_argument("--noise-offset", type=float, default=0.0, help="noise offset (e.g. 0.05); default off")
    g.add_argument("--prior-loss-weight", type=float, default=1.0, help="loss weight of is_reg images")
    g.add_argument("--sample-every", type=int, default=0, metavar="N", help="sample images every N steps")
    g.add_argument("--sample-prompt", action="append", default=[], metavar="TEXT", help="prompt for samples (repeatable)")
    g.add_argument("--sample-seeds", default="1,2", help="comma-separated sample seeds (default 1,2)")
    g.add_argument("--save-state-every", type=int, default=0, metavar="N",
                   help="also save a resumable state every N steps (Ctrl-C and crashes always save one)")
    g.add_argument("--save-every", type=int, metavar="N",
                   help="also save the LoRA of every N-th step as <name>-step00000500.safetensors (with its state)")
    g.add_argument("--recipes", type=Path, help="your own recipes.toml instead of the shipped one")
    g.add_argument("--pivotal-trigger", metavar="WORD",
                   help="pivotal tuning: train this caption word (the keyword) as an embedding with the LoRA")
    g.add_argument("--pivotal-vectors", type=int, metavar="N", help="vectors of the trigger (default 4)")
    g.add_argument("--pivotal-init-text", metavar="TEXT", help="the trigger's starting text (default: the class word)")
    g.add_argument("--pivotal-lr", type=float, metavar="LR", help="the trigger's learning rate (default 0.03)")
    g.add_argument("--pivotal-stop-at", type=float, metavar="F", help="train the trigger for this fraction of the "
                   "steps (default 0.5)")
    g.add_argument("--pivotal-reuse", action="append", type=Path, metavar="FILE",
                   help="LoRA (with bundled embeddings) or embedding file the captions also call (repeatable)")
    g.add_argument("--kohya-dir", type=Path, help="sd-scripts checkout (default: <project>/sd-scripts)")
    g.add_argument("--kohya-python", type=Path, help="python of that checkout (default: its venv)")
    g.add_argument("--dry-run", action="store_true", help="print the plan (and the kohya command) and stop")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA from a dataset TOML (recipes of the original batch file)",
                       description="Train a LoRA with a logic recipe on a dataset folder or TOML.",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset folder (uses <folder>/<folder>.toml) or a dataset .toml")
    p.add_argument("--logic", required=True, help="e.g. Lora3x3A50p-AdamW8")
    p.add_argument("--dim", type=int, required=True, help="base dim (rank)")
    p.add_argument("--lr", type=int, required=True, help="learning rate in units of 1e-6 (ignored by AdaFactor)")
    p.add_argument("--steps", type=int, required=True, help="max train steps")
    p.add_argument("--out", required=True, help="output name")
    p.add_argument("--model", help="SD1.x or SDXL .safetensors/.ckpt or diffusers folder (default: tiny demo model)")
    p.add_argument("--vae", help="VAE file to use instead of the model's")
    p.add_argument("--clip-skip", type=int, default=2, help="clip skip (default 2)")
    p.add_argument("--continue", dest="continue_from", help="LoRA file to continue training from")
    p.add_argument("--output-dir", type=Path, help="default: the project's LoRAOutput/")
    p.add_argument("--logging-dir", type=Path, help="default: the project's LoRALog/")
    _add_common(p)
    p.set_defaults(func=run_train)

    b = sub.add_parser("train-bat", help="train with the original LoRA.bat argument order",
                       description="Train with the positional arguments of the original batch file.",
                       epilog=BAT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("logic", "dim", "lr", "steps", "input", "out", "model", "vae", "clip_skip"):
        b.add_argument(name, type=int if name in ("dim", "lr", "steps", "clip_skip") else str, metavar=name.upper())
    b.add_argument("lora", nargs="?", metavar="LORA", help="LoRA to continue from (optional)")
    _add_common(b)
    b.set_defaults(func=run_train_bat)

    k = sub.add_parser("setup-kohya", help="clone and install kohya sd-scripts (needs internet)",
                       description="Clone kohya-ss/sd-scripts, create its venv and install it as its README says "
                                   "(torch, requirements, lycoris-lora, accelerate default config).",
                       epilog="example:\n  charframe setup-kohya            # into <project>/sd-scripts\n"
                              "  charframe train LoRAInput/4_krnk ... --engine kohya",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--dir", type=Path, help="where to install (default: <project>/sd-scripts)")
    k.add_argument("--torch-index-url", default=None, help="PyTorch wheel index (default: CUDA 12.4 wheels)")
    k.set_defaults(func=run_setup_kohya)


def _options(args: argparse.Namespace) -> dict:
    chosen = {k: getattr(args, k) for k in ("mixed_precision", "attention") if getattr(args, k)}
    return dict(
        **chosen,
        max_token_length=args.max_token_length, noise_offset=args.noise_offset, prior_loss_weight=args.prior_loss_weight,
        family=args.family, prediction=args.prediction, train_text_encoder=args.train_text_encoder,
        min_snr_gamma=args.min_snr_gamma, debiased_estimation=args.debiased_estimation,
        sample_every=args.sample_every, sample_prompts=list(args.sample_prompt),
        sample_seeds=_seeds(args.sample_seeds), save_state_every=args.save_state_every,
        **({"save_every_n_steps": args.save_every} if args.save_every is not None else {}),
        **_pivotal(args),
    )


def _pivotal(args: argparse.Namespace) -> dict:
    """The `[plan.pivotal]` options given (none: the plan has no pivotal table, as before)."""
    out = {k: getattr(args, k) for k in ("pivotal_trigger", "pivotal_vectors", "pivotal_init_text", "pivotal_lr",
                                         "pivotal_stop_at") if getattr(args, k, None) is not None}
    if getattr(args, "pivotal_reuse", None):
        out["pivotal_reuse"] = [str(p.absolute()) for p in args.pivotal_reuse]
    return out


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CharframeError(f"--sample-seeds must be comma-separated integers, got {text!r}") from None


_STATUS_TEXT = {
    "UP_TO_DATE": "up to date (trained from these dataset files, model and settings)",
    "STALE": "out of date (the dataset, model or settings changed since it was trained)",
    "FOREIGN": "exists, but charframe has no record of what it was trained from",
    "MISSING": "not trained yet",
}


def _run(plan, args: argparse.Namespace, root: Path) -> int:
    from charframe.training.engines import train_with
    from charframe.training.outputs import output_status

    result = train_with(plan, args.engine, resume=args.resume, dry_run=args.dry_run,
                        kohya_dir=args.kohya_dir, kohya_python=args.kohya_python, root=root)
    if isinstance(result, str):
        print(result)
        out_file, status = output_status(plan)
        print(f"# {out_file}: {_STATUS_TEXT[status.name]}", file=sys.stderr)
    elif result.output is not None:
        print(result.output)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from charframe.training.paths import job_dirs, resolve_dataset
    from charframe.training.plan import load_recipes, make_plan

    dataset = resolve_dataset(args.dataset)
    dirs = job_dirs(dataset)
    plan = make_plan(
        args.logic, args.dim, args.lr, args.steps, dataset=dataset, out=args.out,
        recipes=load_recipes(args.recipes) if args.recipes else None,
        model=str(Path(args.model).absolute()) if args.model else None,
        vae=str(Path(args.vae).absolute()) if args.vae else None,
        clip_skip=args.clip_skip,
        continue_from=str(Path(args.continue_from).absolute()) if args.continue_from else None,
        output_dir=str((args.output_dir or dirs.output).absolute()),
        logging_dir=str((args.logging_dir or dirs.log).absolute()),
        **_options(args),
    )
    return _run(plan, args, dirs.root)


def run_train_bat(args: argparse.Namespace) -> int:
    from charframe.training.paths import job_dirs, resolve_bat
    from charframe.training.plan import load_recipes, make_plan

    dirs = job_dirs()
    job = resolve_bat(args.input, args.out, args.model, args.vae, args.lora, dirs)
    plan = make_plan(
        args.logic, args.dim, args.lr, args.steps, dataset=job.dataset, out=job.out,
        recipes=load_recipes(args.recipes) if args.recipes else None,
        model=str(job.model), vae=str(job.vae) if job.vae else None, clip_skip=args.clip_skip,
        continue_from=str(job.continue_from) if job.continue_from else None,
        output_dir=str(job.output_dir), logging_dir=str(job.logging_dir), **_options(args),
    )
    return _run(plan, args, dirs.root)


def run_setup_kohya(args: argparse.Namespace) -> int:
    from charframe.training.engines import kohya
    from charframe.training.paths import job_dirs

    dest = args.dir or job_dirs().root / kohya.DEFAULT_DIR_NAME
    kw = {"torch_index_url": args.torch_index_url} if args.torch_index_url else {}
    setup = kohya.setup_kohya(dest, **kw)
    print(f"sd-scripts installed in {setup.dir} (python {setup.python}); train with --engine kohya")
    return 0
