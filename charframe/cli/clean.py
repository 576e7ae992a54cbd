"""`charframe clean`, `pick`, `export`: from generated candidates to a multi-size dataset."""

from __future__ import annotations

import argparse

CLEAN_EPILOG = """\
Reads LoRAWork/<keyword>/<set>/raw/<code>-<n>.png (written by charframe generate, or your own) and writes
  clean/<code>-<n>.png   background filled black or white (the character file's fill; auto = from the hair)
  alpha/<code>-<n>.png   transparent copy (for editing, and for --alpha-mask training)
Methods: flood = flood fill from the border in CIELAB (for the plain backgrounds the prompts ask for);
rembg = a rembg model (isnet-anime.onnx or u2net.onnx in ~/.u2net or $U2NET_HOME, or any U2-Net-style
.onnx by path); auto = rembg when its model file is there, else flood. Nothing is downloaded.
Reruns redo only what changed.

examples:
  charframe clean Characters/krnk.toml                       # every set with candidates (face, body-sf …), method auto
  charframe clean Characters/krnk.toml --set face            # the face set only
  charframe clean Characters/krnk_tyank.group.toml           # a group: its members' face and body sets
  charframe clean Characters/krnk.toml --set body --outfit sf --method flood
  charframe clean Characters/krnk.toml --method rembg --model u2net
  charframe clean Characters/krnk.toml --model ~/models/my_matting.onnx
  charframe clean .                                          # every character of the project
"""

PICK_EPILOG = """\
Every code gets the candidate whose silhouette best matches the template's mask (IoU; ties by agreement
with the soft-edge map); the score table is printed. Picks by hand are pinned: CODE:CANDIDATE pairs, a
selection file of `f12 = 2` lines, or a number changed in picks.toml; every later pick (and every rerun) keeps
them until they are unpinned. Writes picks.toml ([pinned] and [auto]) and contact-picked.png (the picks
outlined) in LoRAWork/<keyword>/<set>/.

examples:
  charframe pick Characters/krnk.toml                        # automatic, pinned picks kept
  charframe pick Characters/krnk.toml f12:2 f03:1            # pin these, the rest automatic
  charframe pick Characters/krnk.toml --unpin f12            # let charframe choose f12 again (--unpin all)
  charframe pick Characters/krnk.toml --set body --outfit sf my-picks.toml
"""

EXPORT_EPILOG = """\
Writes the picked, cleaned images into the dataset: LoRAInput/4_krnk/krnk girl_f0512/f12.png … one
sibling folder per size (the longer side; area downscaling, never upscaled: a size above the
source is skipped with a note). --alpha-mask also writes the transparent copies to
"krnk girl_alpha_f0512/" …, which charframe prepare marks alpha_mask = true in the dataset TOML
(loss weighted by alpha, the alternative to the two-colour background trick). A file in the
dataset that charframe did not write is backed up (.bak) before it is replaced.

examples:
  charframe export Characters/krnk.toml                      # sizes from the character file (512, 768)
  charframe export Characters/krnk.toml --sizes 128,256,512,768
  charframe export Characters/krnk.toml --set body --outfit sf --alpha-mask
"""


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are pixel counts like 512,768; got {text!r}") from None


def _set_name(args: argparse.Namespace, character) -> str:  # type: ignore[no-untyped-def]
    from charframe.errors import CharframeError

    if args.set == "body" and not args.outfit:
        known = ", ".join(character.outfits) or "none defined"
        raise CharframeError(f"--set body needs --outfit (outfits of {character.keyword}: {known})")
    return character.set_name("f" if args.set == "face" else "b", args.outfit or "")


def character_files(paths: list[str]) -> list[str]:
    """Character files from files and folders (a project root or its Characters/ folder), as dropped on
    the launcher."""
    from pathlib import Path

    from charframe.character import CHARACTERS_DIR, find_characters
    from charframe.errors import CharframeError

    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = find_characters(p.parent if p.name == CHARACTERS_DIR else p)
            if not found:
                raise CharframeError(f"{p}: no character files (expected {p / CHARACTERS_DIR / 'krnk.toml'})")
            out += [str(f) for f in found]
        else:
            out.append(str(p))
    return out


def _sets_to_clean(character, args: argparse.Namespace, outfits: list[str] | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """The sets of one character to clean: the one --set/--outfit names, else every set with candidates in raw/
    (face and each body-<outfit>; a group member's own outfit only), else the face set (whose error says to
    generate first)."""
    from charframe.cleaning.images import candidates

    if args.set is not None:
        if args.set == "body" and not args.outfit:
            return [character.set_name("b", o) for o in (outfits if outfits is not None else character.outfits)] \
                or [_set_name(args, character)]  # no outfits: the message that says so
        return [_set_name(args, character)]
    names = ["face"] + [character.set_name("b", o) for o in (outfits if outfits is not None else character.outfits)]
    found = [n for n in names if candidates(character.work_dir(n) / "raw")]
    return found or ["face"]


def clean_jobs(args: argparse.Namespace) -> list[tuple[object, str]]:
    """(character, set) pairs from the dropped files: character files, project folders, and group files (whose
    members' sets are cleaned). Every file is read before any work."""
    import logging

    from charframe.character import load_character
    from charframe.pipeline.stages import GROUP_SUFFIX, load_group

    jobs: list[tuple[object, str]] = []
    for f in character_files(args.character):
        if f.endswith(GROUP_SUFFIX):
            group = load_group(f)
            pairs = [(c, [o]) for c, o in group.members]
            logging.getLogger("charframe").info(
                "%s is a group file: a group has no images of its own; cleaning its members' sets (%s)", f,
                ", ".join(f"{c.keyword} face + body-{o}" for c, o in group.members))
        else:
            pairs = [(load_character(f), None)]
        for character, outfits in pairs:
            jobs += [(character, n) for n in _sets_to_clean(character, args, outfits)]
    unique: dict[tuple[str, str], tuple[object, str]] = {}
    for character, set_name in jobs:
        unique.setdefault((str(character.path), set_name), (character, set_name))  # type: ignore[attr-defined]
    return list(unique.values())


def run_clean(args: argparse.Namespace) -> int:
    from charframe.cleaning.clean import clean_set
    from charframe.pipeline.targets import character_session

    for character, set_name in clean_jobs(args):  # every file read before any work
        with character_session(character):  # its run lock (no `run` of it at the same time); writes stay in its project
            clean_set(character, set_name, method=args.method, model=args.model, progress=not args.quiet)
    return 0


def run_pick(args: argparse.Namespace) -> int:
    from charframe.character import load_character
    from charframe.cleaning.pick import parse_manual, pick_set
    from charframe.pipeline.targets import character_session

    character = load_character(args.character)
    manual = parse_manual(args.picks)
    with character_session(character):
        pick_set(character, _set_name(args, character), manual=manual, unpin=args.unpin)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from charframe.character import load_character
    from charframe.cleaning.export import export_set
    from charframe.pipeline.targets import character_session

    character = load_character(args.character)
    with character_session(character):
        export_set(character, _set_name(args, character), sizes=args.sizes, alpha_mask=args.alpha_mask or None)
    return 0


def _common(p: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        p.add_argument("character", nargs="+", metavar="CHARACTER",
                       help="character file(s), e.g. Characters/krnk.toml, group file(s) (their members' sets), "
                            "or a project folder (all its characters)")
        p.add_argument("--set", choices=("face", "body"), default=None,
                       help="image set (default: every set with generated candidates: face and body-<outfit>)")
    else:
        p.add_argument("character", metavar="CHARACTER", help="the character file, e.g. Characters/krnk.toml")
        p.add_argument("--set", choices=("face", "body"), default="face", help="image set (default face)")
    p.add_argument("--outfit", default="", help="outfit name from the character file (for --set body), e.g. sf")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `charframe clean`, `charframe pick` and `charframe export`."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("clean", help="remove the backgrounds of generated candidates (fill + transparent copy)",
                       description="Remove the background of every candidate of an image set.",
                       epilog=CLEAN_EPILOG, formatter_class=fmt)
    _common(p, many=True)
    p.add_argument("--method", choices=("auto", "flood", "rembg"), default="auto",
                   help="auto (default): rembg when its model is there, else flood")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="rembg model: isnet-anime (default), u2net, … or an .onnx file")
    p.set_defaults(func=run_clean)

    p = sub.add_parser("pick", help="pick one candidate per code (by pose fidelity, or by hand)",
                       description="Pick one cleaned candidate per code.", epilog=PICK_EPILOG, formatter_class=fmt)
    _common(p)
    p.add_argument("picks", nargs="*", metavar="CODE:N|FILE.toml", help="hand picks to pin, e.g. f12:2 (default: none)")
    p.add_argument("--unpin", action="append", metavar="CODE", default=None,
                   help="release a pinned pick (repeatable; `all` releases every one)")
    p.set_defaults(func=run_pick)

    p = sub.add_parser("export", help="export the picks at several sizes into LoRAInput/",
                       description="Export the picked images into the dataset at several sizes.",
                       epilog=EXPORT_EPILOG, formatter_class=fmt)
    _common(p)
    p.add_argument("--sizes", type=parse_sizes, default=None, metavar="512,768",
                   help="export sizes in px (default: the character file's [export] sizes)")
    p.add_argument("--alpha-mask", action="store_true",
                   help="also export the transparent copies as _alpha_ subsets (alpha_mask = true)")
    p.set_defaults(func=run_export)
