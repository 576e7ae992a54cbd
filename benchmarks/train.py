"""Benchmark: the built-in trainer's steps/s and peak memory, against a naive diffusers+peft loop.

    python benchmarks/train.py                  # CPU, tiny SD1.x model (64 px, batch 2, Lora3x3 dim 8)
    python benchmarks/train.py --gpu            # SD1.5-shaped random model, 512 px, batch 2, Lora3x3 dim 128
    python benchmarks/train.py --gpu --small    # the --gpu code path at toy sizes (runs on CPU too)
    python benchmarks/train.py --image-check 20000   # cost of the start-up decode check (--image-check 2000: quick)
    python benchmarks/train.py --family sdxl    # CPU, tiny SDXL model (64 px, batch 2, Lora3x3 dim 8, UNet only)
    python benchmarks/train.py --family sdxl --gpu   # SDXL-shaped random model, 1024 px, batch 1, dim 32, bf16

Every configuration runs in a fresh interpreter, so each peak is its own: peak RSS (ru_maxrss) on CPU,
peak allocated/reserved VRAM on CUDA; "RSS before" is after the model is built, before training.
Timing skips the first `--warmup` steps (allocator and kernel warm-up).

- charframe: `charframe.training.engines.builtin.train` exactly as `charframe train` runs it (data loading,
  augmentation, VAE encode, TensorBoard, progress bar included). On CUDA: fp16 autocast with fp16
  frozen weights, gradient checkpointing, 8-bit AdamW, SDPA; on CPU: fp32, AdamW, no checkpointing.
- charframe+ckpt / charframe-no-ckpt: the same with gradient checkpointing switched.
- naive: the textbook diffusers LoRA loop — peft adapters on the same layers (rank, alpha),
  torch AdamW, pre-loaded pixels, no checkpointing; fp16 autocast on CUDA with fp32 weights.
  SDXL (`--family sdxl`): UNet-only adapters on both sides (charframe's SDXL default), the naive loop runs
  both text encoders every step (pooled projection and fixed time ids, as diffusers' SDXL example does).
Targets (CONVENTIONS/issue 5): peak VRAM ≤ 8 GB for charframe on --gpu; it/s ≥ sd-scripts on the same GPU.
Issue 20 (SDXL): built-in ≥ 1.0× the naive loop on the tiny plan (CPU); on a GPU at 1024 px, batch 1, dim 32,
UNet only, bf16, gradient checkpointing, 8-bit AdamW: it/s and peak VRAM (target ≤ 12 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEFT_UNET = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
             "conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv"]
PEFT_TE = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def sd15_shaped(device: str):
    """A random model with SD1.5's real shapes (UNet 860M, CLIP ViT-L/14 text encoder, SD VAE)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from charframe.models.components import SDComponents
    from charframe.models.single_file import sd15_config
    from charframe.models.tokenizer import clip_tokenizer

    cfg = sd15_config()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(cfg.unet)
        vae = AutoencoderKL.from_config(cfg.vae)
        te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in cfg.text_encoder.items() if not k.startswith("_")}))
    return SDComponents(unet, vae, te, clip_tokenizer(), DDPMScheduler.from_config(cfg.scheduler),
                        {"name": "sd15-shaped-random", "base_model_version": "sd_v1"})


def sdxl_shaped(device: str):
    """A random model with SDXL 1.0's real shapes (the shipped configs: UNet 2.6B, CLIP-L + OpenCLIP-G, SDXL VAE)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from charframe.models.components import SDComponents
    from charframe.models.single_file import build_text_encoder, family_config
    from charframe.families.family import get_family
    from charframe.models.tokenizer import clip_tokenizer

    cfg, fam = family_config("sdxl"), get_family("sdxl")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(cfg.unet)
        vae = AutoencoderKL.from_config(cfg.vae)
        te1, te2 = (build_text_encoder(te, cfg.encoder_config(te)) for te in fam.text_encoders)
    return SDComponents(unet, vae, te1, clip_tokenizer(), DDPMScheduler.from_config(cfg.scheduler),
                        {"name": "sdxl-shaped-random", "base_model_version": "sdxl_base_v1-0"},
                        text_encoder_2=te2, tokenizer_2=clip_tokenizer(pad_token="!"), family="sdxl")


def model(args: argparse.Namespace):
    """The benchmark's model: tiny or real-shaped, of the chosen family."""
    from charframe.models.tiny import build_tiny_sd, build_tiny_sdxl

    if args.family == "sdxl":
        return sdxl_shaped("cpu") if args.shape == "full" else build_tiny_sdxl()
    return sd15_shaped("cpu") if args.shape == "sd15" else build_tiny_sd()


def make_dataset(folder: Path, size: int, batch: int, n: int = 4) -> Path:
    import numpy as np
    import tomli_w
    from PIL import Image

    sub = folder / "krnk girl_f0512"
    sub.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(sub / f"f0{i}.png")
        (sub / f"f0{i}.txt").write_text("krnk, white background, black background, simple background, from front")
    toml = folder / "bench.toml"
    toml.write_text(tomli_w.dumps({
        "general": {"color_aug": True, "enable_bucket": True, "bucket_no_upscale": True, "caption_extension": ".txt", "num_repeats": 4,
                    "min_bucket_reso": min(size, 256)},
        "datasets": [{"resolution": [size, size], "batch_size": batch,
                      "subsets": [{"image_dir": str(sub), "class_tokens": "krnk girl", "flip_aug": True}]}],
    }))
    return toml


def _memory(device: str) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        import torch

        out["peak_vram_alloc_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_vram_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def _rss_mb() -> float:
    if not os.path.exists("/proc/self/status"):
        return 0.0
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def run_charframe(args: argparse.Namespace, checkpointing: bool | None) -> dict:
    import torch

    from charframe.training.plan import make_plan
    from charframe.training.engines.builtin import train

    device = "cuda" if torch.cuda.is_available() else "cpu"
    comps = model(args)
    extra = {"mixed_precision": args.precision} if args.precision else {}
    with tempfile.TemporaryDirectory() as tmp:
        toml = make_dataset(Path(tmp) / "data", args.size, args.batch)
        plan = make_plan("Lora3x3A50p-AdamW8", args.dim, 100, args.steps, dataset=toml, out="bench",
                         output_dir=str(Path(tmp) / "out"), logging_dir=str(Path(tmp) / "log"), **extra)
        stamps: list[float] = []
        rss0 = _rss_mb()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train(plan, components=comps, checkpointing=checkpointing, on_step=lambda s, l: stamps.append(time.perf_counter()))
    timed = stamps[args.warmup - 1 :] if args.warmup else stamps
    return {"steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "rss_before_mb": rss0, **_memory(device)}


def run_naive(args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    comps = model(args)
    xl = comps.text_encoder_2 is not None
    unet, vae, te = (m.to(device).requires_grad_(False) for m in (comps.unet, comps.vae, comps.text_encoder))
    te2 = comps.text_encoder_2.to(device).requires_grad_(False) if xl else None
    alpha = args.dim // 2
    for m, targets in ((unet, PEFT_UNET), (te, PEFT_TE)) if not xl else ((unet, PEFT_UNET),):  # SDXL: UNet only
        inject_adapter_in_model(LoraConfig(r=args.dim, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian"), m)
    params = [p for m in (unet, te) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    pixels = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    text = ["krnk, white background, black background, simple background, from front"] * args.batch
    ids = comps.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(device)
    ids2 = comps.tokenizer_2(text, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids.to(device) if xl else None
    time_ids = torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]] * args.batch, device=device, dtype=torch.float32)
    sched = comps.noise_scheduler
    rss0 = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stamps = []
    half = torch.bfloat16 if args.precision == "bf16" else torch.float16
    amp = torch.autocast("cuda", half) if device == "cuda" else torch.autocast("cpu", enabled=False)
    scaler = torch.amp.GradScaler(enabled=device == "cuda" and half == torch.float16)
    for _ in range(args.steps):
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (args.batch,), device=device)
        with amp:
            if xl:
                out1, out2 = te(ids, output_hidden_states=True), te2(ids2, output_hidden_states=True)
                states = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
                added = {"text_embeds": out2.text_embeds, "time_ids": time_ids}
                pred = unet(sched.add_noise(latents, noise, t), t, states, added_cond_kwargs=added).sample
            else:
                states = te(ids)[0]
                pred = unet(sched.add_noise(latents, noise, t), t, states).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    timed = stamps[args.warmup - 1 :] if args.warmup else stamps
    return {"steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "rss_before_mb": rss0, **_memory(device)}


def image_check(n: int, size: int = 64) -> int:
    """The start-up image check on `n` small PNGs: reading the dataset (headers only, what start-up did
    before) against the full decode check that now follows it."""
    import numpy as np
    import tomli_w
    from PIL import Image

    from charframe.training.data import load_dataset
    from charframe.training.imagecheck import check_images

    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "krnk girl_f0064"
        sub.mkdir()
        rng = np.random.default_rng(0)
        block = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for i in range(n):
            block[i % size, :, :] = i % 256  # distinct files, realistic compression
            Image.fromarray(block).save(sub / f"f0{i:05d}.png")
            (sub / f"f0{i:05d}.txt").write_text("krnk, white background")
        toml = Path(tmp) / "bench.toml"
        toml.write_text(tomli_w.dumps({"general": {"caption_extension": ".txt", "enable_bucket": True,
                                                   "bucket_no_upscale": True, "min_bucket_reso": 64},
                                       "datasets": [{"resolution": [size, size], "batch_size": 1,
                                                     "subsets": [{"image_dir": str(sub)}]}]}))
        t0 = time.perf_counter()
        group = load_dataset(toml)
        t1 = time.perf_counter()
        check_images(group)
        t2 = time.perf_counter()
    print(f"{'images':>8} {'size':>6} {'read dataset (s)':>18} {'decode check (s)':>18} {'check per image (ms)':>22} {'added':>8}")
    print(f"{n:>8} {size:>6} {t1 - t0:>18.2f} {t2 - t1:>18.2f} {(t2 - t1) / n * 1000:>22.3f} {(t2 - t1) / (t1 - t0):>7.1f}x")
    return 0


CONFIGS = {
    "charframe": lambda a: run_charframe(a, None),
    "charframe+ckpt": lambda a: run_charframe(a, True),
    "charframe-no-ckpt": lambda a: run_charframe(a, False),
    "naive": run_naive,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="SD1.5-shaped model at 512 px, batch 2, dim 128")
    ap.add_argument("--small", action="store_true", help="with --gpu: toy sizes to check the code path (CPU ok)")
    ap.add_argument("--steps", type=int, help="steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed")
    ap.add_argument("--configs", help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: torch's default)")
    ap.add_argument("--image-check", type=int, metavar="N", help="only time the start-up image check on N images")
    ap.add_argument("--family", choices=("sd15", "sdxl"), default="sd15", help="model family (default sd15)")
    ap.add_argument("--precision", choices=("fp16", "bf16", "no"), help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="tiny", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.image_check:
        return image_check(args.image_check)
    if args.worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import logging

        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        logging.basicConfig(level=logging.ERROR)
        print("RESULT " + json.dumps(CONFIGS[args.worker](args)), flush=True)
        return 0
    precision = ""
    if args.gpu and args.family == "sdxl":
        shape, size, batch, dim, steps = ("full", 64, 1, 8, 4) if args.small else ("full", 1024, 1, 32, 30)
        names, precision = ["charframe", "naive"], "bf16"
    elif args.gpu:
        shape, size, batch, dim, steps = ("sd15", 64, 1, 8, 4) if args.small else ("sd15", 512, 2, 128, 30)
        names = ["charframe", "charframe-no-ckpt", "naive"]
    else:
        shape, size, batch, dim, steps = "tiny", 64, 2, 8, 20
        names = ["charframe", "charframe+ckpt", "naive"]
    steps = args.steps or steps
    names = args.configs.split(",") if args.configs else names
    print(f"model {args.family} {shape}, {size} px, batch {batch}, Lora3x3 dim {dim}, {steps} steps ({args.warmup} untimed), "
          f"threads {args.threads or 'default'}")
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--shape", shape, "--size", str(size), "--batch", str(batch),
               "--dim", str(dim), "--steps", str(steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--family", args.family] + (["--precision", precision] if precision else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}")
            return 1
        rows.append((name, json.loads(line[7:])))
    keys = [k for k in ("steps_per_s", "rss_before_mb", "peak_rss_mb", "peak_vram_alloc_gb", "peak_vram_reserved_gb") if k in rows[0][1]]
    print(f"{'config':<20}" + "".join(f"{k:>22}" for k in keys))
    for name, r in rows:
        print(f"{name:<20}" + "".join(f"{r[k]:>22.3f}" for k in keys))
    base = dict(rows).get("naive")
    if base:
        for name, r in rows:
            if name != "naive":
                print(f"{name}: {r['steps_per_s'] / base['steps_per_s']:.2f}x the naive loop's steps/s")
    if args.gpu and not args.small and "peak_vram_reserved_gb" in rows[0][1]:
        limit = 12 if args.family == "sdxl" else 8
        ok = rows[0][1]["peak_vram_reserved_gb"] <= limit
        print(f"target peak VRAM <= {limit} GB (charframe, reserved): {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
