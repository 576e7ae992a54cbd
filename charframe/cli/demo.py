"""`charframe demo`: `charframe run` on a demo character with embedded defaults (see charframe.pipeline.demo)."""

from __future__ import annotations

import argparse

EPILOG = """\
what it does (in the project found from the current folder; the repo itself by default): writes the demo
character file Characters/demo.toml and runs `charframe run demo --stage face` on it:
  1. LoRAInput/4_demo/   the example dataset: clay renders of the bundled FaceTemplate/ on black,
                         at 128, 256 and 768 px ("demo girl_f0128" …), copied from examples/
  2. captions (.txt) and LoRAInput/4_demo/4_demo.toml, exactly as `charframe prepare` writes them
  3. the built-in trainer: LoRAOutput/demo/demo-Lora3x3A50p-AdamW8-8-100-20.safetensors
  4. the FACE block-weight merge (…-FACE.safetensors) and the SvR16 compression (…-FACE-SvR16.safetensors)
  5. LoRAOutput/demo/demo-face-preview.png: base model vs LoRA vs merged vs compressed on five scenes × two seeds
     (also in TensorBoard: charframe tensorboard, or bin/tensorboard)
Run it again and nothing runs (every step is up to date); change an option and only what it affects reruns.

Without --model the tiny random demo model is used: the run is real, the pictures it would make are noise.
examples:
  charframe demo
  charframe demo --model LoRAInput/anything-v5.safetensors --vae LoRAInput/kl-f8-anime2.ckpt --dim 32 --steps 300
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole flow once on the example dataset (tiny demo model by default)",
        description="Example dataset → captions + TOML → training → FACE merge → SvR16 compression → preview grid.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--project", metavar="DIR", help="project folder (default: found from the current folder)")
    p.add_argument("--model", help="SD1.x checkpoint or diffusers folder (default: tiny demo model)")
    p.add_argument("--vae", help="optional VAE file or folder")
    p.add_argument("--logic", default="Lora3x3A50p-AdamW8", help="training recipe (default: %(default)s)")
    p.add_argument("--dim", type=int, default=8, help="network dim (default: %(default)s)")
    p.add_argument("--lr", type=int, default=100, help="learning rate in 1e-6 (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="training steps (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from charframe.pipeline.demo import run_demo
    from charframe.pipeline.progress import inner_bars

    result = run_demo(args.project, model=args.model, vae=args.vae, logic=args.logic,
                      dim=args.dim, lr=args.lr, steps=args.steps, progress=inner_bars(args.quiet))
    print(f"dataset     {result.dataset}\ntoml        {result.toml}\nlora        {result.lora}\n"
          f"merged      {result.merged}\ncompressed  {result.compressed}\npreview     {result.preview}")
    return 0
