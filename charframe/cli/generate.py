"""`charframe generate`: ControlNet candidates of a character's face or body set (see charframe.generation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from charframe.errors import CharframeError

EPILOG = """\
Reads the character file (Characters/<keyword>.toml: prompt, outfits, [generation] model, ControlNet, sampler,
steps, CFG, size, hires, candidates, seed) and the pose templates (FaceTemplate/, BodyTemplate/ and their exact
control maps), and writes N candidates per code with seeds seed+0 … seed+N-1:
  LoRAWork/<keyword>/face/raw/f12-0.png …         face set (upper body)
  LoRAWork/<keyword>/body-<outfit>/raw/b02-0.png   body set, one per outfit, with the face LoRA applied
  LoRAWork/<keyword>/<set>/contact.png             codes × candidates at a glance
Every PNG carries WebUI's parameters (PNG Info shows prompt, seed, sampler, ControlNet settings). Existing
candidates are kept: rerunning only makes the missing ones, so an interrupted run (Ctrl-C) just continues.
CHARACTER is a character file, a keyword (Characters/<keyword>.toml of the project found from the current
folder) or a project folder (every character in its Characters/).

examples:
  charframe generate Characters/krnk.toml                         # the face set, every code
  charframe generate krnk --codes f12,f13 --candidates 8          # more choice for two angles
  charframe generate krnk --control hed                           # HED of the template pictures (drawn ones)
  charframe generate krnk --set body --outfit sf --face-lora LoRAOutput/krnk/krnk-FACE-SvR16.safetensors
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate candidate images of a character from the pose templates (ControlNet)",
        description="Pose templates + character file → N ControlNet candidates per code, with WebUI PNG info.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("character", metavar="CHARACTER", nargs="+", help="character file(s), keyword(s), or project folder")
    p.add_argument("--set", dest="kind", choices=("face", "body"), default="face", help="which set (default: face)")
    p.add_argument("--outfit", default="", help="body set: the outfit from [outfits] (default: every outfit)")
    p.add_argument("--codes", help="only these codes, comma-separated (e.g. f12,f13; default: every angle)")
    p.add_argument("--candidates", type=int, help="candidates per code (default: generation.candidates)")
    p.add_argument("--control", help="control map(s) for the ControlNet(s) in order: softedge (default), hed, "
                                     "depth, normal, canny, …; e.g. softedge,depth")
    p.add_argument("--face-lora", metavar="PATH", help="the character's face LoRA, applied to the body set")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--batch", type=int, metavar="N", help="candidates of one code made at once (default: from the "
                   "GPU's memory, 1 on the CPU); the pictures are the same whatever the batch")
    p.set_defaults(func=run)


def characters(arg: str) -> list:
    from charframe.character import CHARACTERS_DIR, find_characters, load_character
    from charframe.project import find_project_root

    path = Path(arg).expanduser()
    if path.is_file():
        return [load_character(path)]
    if path.is_dir():
        files = find_characters(path) or find_characters(find_project_root(path))
        if not files:
            raise CharframeError(f"{path}: no character files ({CHARACTERS_DIR}/<keyword>.toml) in this project")
        return [load_character(f) for f in files]
    candidate = find_project_root() / CHARACTERS_DIR / f"{arg}.toml"
    if candidate.is_file():
        return [load_character(candidate)]
    raise CharframeError(f"{arg}: not a character file, keyword ({candidate} does not exist) or project folder")


def run(args: argparse.Namespace) -> int:
    from charframe.generation.generate import generate_set
    from charframe.pipeline.targets import character_session

    codes = [c for c in args.codes.split(",") if c.strip()] if args.codes else None
    for ch in [c for arg in args.character for c in characters(arg)]:
        kind = "f" if args.kind == "face" else "b"
        outfits = [args.outfit] if kind == "f" or args.outfit else list(ch.outfits)
        if not outfits:
            raise CharframeError(f"{ch.path}: no [outfits] defined; the body set needs at least one (sf = \"sailor uniform\")")
        with character_session(ch):  # its run lock (no `run` of it at the same time); writes stay in its project
            for outfit in outfits:
                res = generate_set(ch, kind, outfit=outfit if kind == "b" else "", codes=codes, candidates=args.candidates,
                                   face_lora=args.face_lora, control=args.control, device=args.device,
                                   batch=args.batch)
                print(f"{ch.keyword} {ch.set_name(kind, outfit if kind == 'b' else '')}: {len(res.written)} new, "
                      f"{len(res.skipped)} kept, {res.seconds:.1f} s ({res.images_per_second:.2f} img/s) → "
                      f"{res.work_dir}/raw\ncontact sheet: {res.contact}")
    return 0
