"""Benchmark: charframe's generation path against a bare diffusers ControlNet pipeline call, side by side.

    python benchmarks/generate.py                        # tiny model on CPU: generate_set vs bare pipeline
    python benchmarks/generate.py --gpu --json out.json  # SD1.5-shaped RANDOM weights, 512 px, 28 steps, fp16
    python benchmarks/generate.py --gpu --device cpu --steps 2 --size 64   # smoke test of the --gpu mode
    python benchmarks/generate.py --batch 4              # batched candidates vs one at a time (tiny, CPU)
    python benchmarks/generate.py --batch 4 --gpu        # the same at 512 px, SD1.5 shapes, fp16 (target ≥ 2×)

Default mode: the tiny random model (charframe.models.tiny) and tiny ControlNet. charframe = `generate_set` on
a scratch project (template checks, code prompt, A1111 weighted embeddings, control maps, PNG with parameters,
contact sheet); bare = `StableDiffusionControlNetPipeline(prompt=…, image=…)` with the same model objects,
scheduler, size, steps, CFG, ControlNet weight and guidance range. Per-image time excludes model loading for
both (generate_set reports its load time). Target (issue 9): charframe ≤ 5 % over bare. A third path in the same
interleaved rounds: generate_set with prompt editing and alternation in the character prompt
(`[short:long:0.5] hair, [cat|dog] ears`: a different conditioning per step); target (issue 21): ≤ 5 % per image
over the plain prompt.

--gpu: SD1.5-shaped random weights built from charframe/data/models/sd15 + controlnet_sd15 configs (no files),
one and two ControlNets; charframe = the per-image path generate_set runs (weighted embeddings + Runner + PNG
with parameters, atomic write); bare = the pipeline with prompt strings + a plain PNG save. The two paths alternate
image by image; medians are compared (peak VRAM is the run's, both paths). Reports it/s and peak VRAM (torch.cuda.max_memory_allocated).
This mode imports only torch, diffusers, transformers, safetensors, numpy, pillow and charframe.

--batch N (issue 23): the N candidates of one code made as one batch (`Runner.images`, each seed with its own
generator) against one at a time (`Runner.image`), same model, code, seeds and device, interleaved rounds;
images/s of each and the largest pixel difference between the two (the pictures must be the same up to kernel
differences). Target on a GPU at 512 px, 4 candidates: ≥ 2× images/s. On the CPU charframe keeps batch 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "1girl, solo, short black hair, cat ears, (black background:1.3), simple background, upper body, (nude:1.4), (from above:1.3), from side, looking away"
NEGATIVE = "lowres, bad anatomy, bad hands, text, error, worst quality, low quality"


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    line = lambda vals: "  ".join(str(v).rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line([r.get(c, "") for c in columns]) for r in rows])


def scheduler_for(base_config):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(dict(base_config), use_karras_sigmas=True, algorithm_type="dpmsolver++")


def bare_pipeline(comps, controlnets, scheduler):
    from diffusers import MultiControlNetModel, StableDiffusionControlNetPipeline

    cn = MultiControlNetModel(controlnets) if len(controlnets) > 1 else controlnets[0]
    pipe = StableDiffusionControlNetPipeline(comps.vae, comps.text_encoder, comps.tokenizer, comps.unet, cn, scheduler,
                                             None, None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bare_call(pipe, controls, size, steps, seed, n_cn):
    import torch

    one = lambda v: v if n_cn > 1 else v[0]  # noqa: E731
    with torch.inference_mode():
        return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=one(controls), width=size[0], height=size[1],
                    num_inference_steps=steps, guidance_scale=10.0, generator=torch.Generator("cpu").manual_seed(seed),
                    controlnet_conditioning_scale=one([0.5] * n_cn), control_guidance_start=one([0.0] * n_cn),
                    control_guidance_end=one([0.3] * n_cn), output_type="pil").images[0]


# ---------------------------------------------------------------- tiny model, CPU: generate_set vs bare
def tiny_mode(args) -> list[dict]:
    import numpy as np
    from PIL import Image

    from charframe.character import load_character
    from charframe.generation.generate import generate_set
    from charframe.models.controlnet import load_controlnet
    from charframe.models.load import load_sd

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "LoRAInput").mkdir()
        (root / "Characters").mkdir()
        codes = [f"f1{a}" for a in range(args.codes)]
        for code in codes:
            d = root / "FaceTemplate" / "control" / "softedge"
            d.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(int(code[1:]))
            Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)).save(d / f"{code}.png")
        for keyword, prompt in (("bench", "1girl, solo, short black hair, cat ears"),
                                ("benchedit", "1girl, solo, [short:long:0.5] black hair, [cat|dog] ears")):
            (root / "Characters" / f"{keyword}.toml").write_text(
                f'keyword = "{keyword}"\nprompt = "{prompt}"\nnegative = "{NEGATIVE}"\nfill = "black"\n'
                f'[generation]\nsteps = {args.steps}\nsize = {args.size}\nhires_scale = 1.0\n'
                f'candidates = {args.candidates}\nsampler = "DPM++ 2M Karras"\nclip_skip = 1\n', encoding="utf-8")
        ch = load_character(root / "Characters" / "bench.toml")
        edit = load_character(root / "Characters" / "benchedit.toml")
        comps = load_sd(None)
        cn, _ = load_controlnet(None, dict(comps.unet.config))
        pipe = bare_pipeline(comps, [cn], scheduler_for(comps.noise_scheduler.config))
        controls = [Image.open(root / "FaceTemplate" / "control" / "softedge" / f"{c}.png").convert("RGB") for c in codes]
        n = len(codes) * args.candidates
        bare_call(pipe, [controls[0]], (args.size, args.size), args.steps, 0, 1)  # warm-up
        bare_times, ours_times, edit_times, loads = [], [], [], []
        for _ in range(args.rounds):  # interleaved rounds: a load spike on a shared machine hits every side
            t = time.perf_counter()
            for c in controls:
                for i in range(args.candidates):
                    bare_call(pipe, [c], (args.size, args.size), args.steps, 1234 + i, 1)
            bare_times.append((time.perf_counter() - t) / n)
            for p in (root / "LoRAWork").glob("**/*.png"):
                p.unlink()
            res = generate_set(ch, "f", codes=codes, progress=False, device="cpu")
            ours_times.append((res.seconds - res.load_seconds) / len(res.written))
            loads.append(res.load_seconds)
            res = generate_set(edit, "f", codes=codes, progress=False, device="cpu")
            edit_times.append((res.seconds - res.load_seconds) / len(res.written))
        paired = statistics.median(e / o for e, o in zip(edit_times, ours_times))  # same round, same load
        for stat, pick in (("min", min), ("median", statistics.median)):
            bare, ours, edited = pick(bare_times), pick(ours_times), pick(edit_times)
            rows.append({"stat": stat, "rounds": args.rounds, "images/round": n, "size": args.size, "steps": args.steps,
                         "bare s/img": f"{bare:.3f}", "charframe s/img": f"{ours:.3f}",
                         "overhead": f"{100 * (ours / bare - 1):+.1f} %", "editing s/img": f"{edited:.3f}",
                         "editing vs plain": f"{100 * (edited / ours - 1):+.1f} %",
                         "editing vs plain, paired median": f"{100 * (paired - 1):+.1f} %",
                         "charframe load s": f"{pick(loads):.2f}"})
    return rows


# ---------------------------------------------------------------- SD1.5-shaped random weights (--gpu)
def sd15_random(device: str, dtype):
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
        te = CLIPTextModel(CLIPTextConfig.from_dict(cfg.text_encoder))
    for m in (unet, vae, te):
        m.to(dtype=dtype).eval()
    return SDComponents(unet, vae, te, clip_tokenizer(), DDPMScheduler.from_config(cfg.scheduler), {})


def sd15_controlnet(device: str, dtype, seed: int):
    import torch

    from charframe.models.controlnet import build_controlnet, sd15_controlnet_config

    torch.manual_seed(seed)
    with torch.device(device):
        model = build_controlnet(sd15_controlnet_config())
    return model.to(dtype=dtype).eval()


def gpu_mode(args) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    from charframe.generation.pnginfo import parameters_text, write_png
    from charframe.generation.prompt import encode_pair
    from charframe.generation.passes import PassSettings, Runner

    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    cuda = args.device.startswith("cuda")
    comps = sd15_random(args.device, dtype)
    nets = [sd15_controlnet(args.device, dtype, s) for s in (1, 2)]
    rng = np.random.default_rng(0)
    controls = [Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)) for _ in nets]
    rows = []
    out = Path(tempfile.mkdtemp())
    for n_cn in (1, 2):
        cns, ctl = nets[:n_cn], controls[:n_cn]
        settings = PassSettings(args.steps, 10.0, (0.5,) * n_cn, (0.0,) * n_cn, (0.3,) * n_cn)
        runner = Runner(comps, cns, "DPM++ 2M Karras")
        bare = bare_pipeline(comps, cns, scheduler_for(comps.noise_scheduler.config))

        def ours(seed: int) -> None:
            pos, neg = encode_pair(PROMPT, NEGATIVE, comps.tokenizer, comps.text_encoder, 2)
            img = runner.image(pos, neg, ctl, seed, settings)
            write_png(out / f"{seed}.png", img, parameters_text(PROMPT, NEGATIVE, {"Seed": seed}))

        def theirs(seed: int) -> None:  # what a diffusers user writes: the call, then a plain PNG save
            bare_call(bare, ctl, (args.size, args.size), args.steps, seed, n_cn).save(out / f"bare-{seed}.png")

        paths = (("bare diffusers", theirs), ("charframe", ours))
        times: dict[str, list[float]] = {name: [] for name, _ in paths}
        for name, fn in paths:
            fn(0)  # warm-up (kernels, allocator)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.images):  # interleaved, so clock and load drift hit both paths alike
            for name, fn in paths:
                t = time.perf_counter()
                fn(1 + i)
                if cuda:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        for name, _ in paths:
            per = statistics.median(times[name])
            rows.append({"controlnets": n_cn, "path": name, "size": args.size, "steps": args.steps,
                         "s/img": round(per, 3), "it/s": round(args.steps / per, 2), "peak VRAM GiB": round(peak, 2),
                         "min s": round(min(times[name]), 3)})
    for n_cn in (1, 2):
        b, c = [r for r in rows if r["controlnets"] == n_cn]
        c["overhead"] = f"{100 * (c['s/img'] / b['s/img'] - 1):+.1f} %"
    return rows


# ---------------------------------------------------------------- --batch: one batch vs one at a time
def batch_mode(args) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    from charframe.generation.passes import PassSettings, Runner
    from charframe.generation.prompt import encode_pair

    if args.gpu:
        dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
        comps = sd15_random(args.device, dtype)
        nets = [sd15_controlnet(args.device, dtype, 1)]
    else:
        from charframe.models.controlnet import load_controlnet
        from charframe.models.load import load_sd

        comps = load_sd(None)
        nets = [load_controlnet(None, dict(comps.unet.config))[0]]
    cuda = args.device.startswith("cuda")
    rng = np.random.default_rng(0)
    control = [Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8))]
    runner = Runner(comps, nets, "DPM++ 2M Karras")
    settings = PassSettings(args.steps, 10.0, (0.5,), (0.0,), (0.3,))
    pos, neg = encode_pair(PROMPT, NEGATIVE, comps.tokenizer, comps.text_encoder, 2)
    seeds = [1234 + i for i in range(args.batch)]

    def one_at_a_time():
        return [runner.image(pos, neg, control, x, settings) for x in seeds]

    def batched():
        return runner.images(pos, neg, control, seeds, settings)

    paths = (("one at a time", one_at_a_time), (f"batch of {args.batch}", batched))
    for _, fn in paths:
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    images: dict[str, list] = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.rounds):  # interleaved: load spikes hit both
        for name, fn in paths:
            t = time.perf_counter()
            images[name] = fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    a, b = ([np.asarray(im).astype(int) for im in images[name]] for name, _ in paths)
    worst = max(int(np.abs(x - y).max()) for x, y in zip(a, b))
    rows = []
    base = statistics.median(times[paths[0][0]])
    for name, _ in paths:
        med = statistics.median(times[name])
        rows.append({"device": args.device, "size": args.size, "steps": args.steps, "path": name,
                     "images/s": round(args.batch / med, 3), "s/img": round(med / args.batch, 3),
                     "speed-up": f"{base / med:.2f}×", "max pixel diff": worst,
                     "peak VRAM GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else ""})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="SD1.5-shaped random weights, fp16 (on --device)")
    p.add_argument("--device", default=None, help="torch device (--gpu: cuda by default)")
    p.add_argument("--size", type=int, help="image side, px (tiny: 96, --gpu: 512)")
    p.add_argument("--steps", type=int, help="sampling steps (tiny: 6, --gpu: 28)")
    p.add_argument("--images", type=int, default=3, help="--gpu: timed images per row (default 3)")
    p.add_argument("--codes", type=int, default=2, help="tiny: codes (default 2)")
    p.add_argument("--candidates", type=int, default=2, help="tiny: candidates per code (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="tiny: interleaved rounds (default 3)")
    p.add_argument("--json", type=Path, help="write the rows as JSON here")
    p.add_argument("--batch", type=int, default=0, help="candidates per batch vs one at a time (default: off)")
    args = p.parse_args(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()  # "modules that should be kept in float32: []" on every cast of random models
    if args.batch:
        args.device = args.device or ("cuda" if args.gpu else "cpu")
        args.size, args.steps = args.size or (512 if args.gpu else 96), args.steps or (28 if args.gpu else 6)
        rows = batch_mode(args)
        cols = list(rows[0])
    elif args.gpu:
        args.device = args.device or "cuda"
        args.size, args.steps = args.size or 512, args.steps or 28
        rows = gpu_mode(args)
        cols = ["controlnets", "path", "size", "steps", "s/img", "it/s", "peak VRAM GiB", "overhead"]
    else:
        args.size, args.steps = args.size or 96, args.steps or 6
        rows = tiny_mode(args)
        cols = list(rows[0])
    print(table(rows, cols))
    if args.json:
        mode = ("batch-" if args.batch else "") + ("gpu" if args.gpu else "tiny")
        args.json.write_text(json.dumps({"mode": mode, "rows": rows,
                                         "modules": sorted(m for m in sys.modules if "." not in m)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
