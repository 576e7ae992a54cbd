"""CLI: `tag`, `toml`, `prepare`, `explain` — captions and dataset TOML from names (no model needed)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("charframe.cli.naming")

_RAW = argparse.RawDescriptionHelpFormatter

TAG_EPILOG = """\
examples:
  charframe tag LoRAInput/4_krnk
  charframe tag LoRAInput                       # every dataset below it
  charframe tag LoRAInput/4_krnk --rules my_rules.toml

`LoRAInput/4_krnk/krnk girl_f0512/f00.png` gets `f00.txt`:
  krnk, white background, black background, simple background, from horizontal, from front, ...
Images without a code ([fb][0-2][0-7] at the start of the name) are skipped and listed.
A caption that differs from the rules and was not written by charframe (a hand edit) is kept and
reported (exit code 1); --force replaces it and keeps a .bak copy. Rules: charframe.toml [captions].
"""

TOML_EPILOG = """\
examples:
  charframe toml LoRAInput/4_krnk                  # writes LoRAInput/4_krnk/4_krnk.toml
  charframe toml LoRAInput/4_krnk --vram 12gb
  charframe toml LoRAInput --relative-to ../sd-scripts   # every N_name folder, paths relative

num_repeats comes from the N_ prefix, one [[datasets]] per size class (each side <=512 LOW,
<=768 MID, else HIGH -> 512/768/1024), one subset per image folder. `_noflip_` in a folder name
turns flip_aug off, `_reg_` marks a regularisation subset. VRAM profiles: default, 8gb, 12gb, 16gb,
24gb, or your own [vram_profiles.NAME] in charframe.toml.
families: SD1.x (default) and SDXL (--family sdxl: SDXL's bucketing and batch sizes; `charframe run` passes
the character's family itself).
"""

PREPARE_EPILOG = """\
examples:
  charframe prepare LoRAInput/4_krnk
  charframe prepare LoRAInput/4_krnk LoRAInput/2_krnksf_krnk --vram 12gb

Same as `tag` then `toml`, but every folder is checked first: a folder whose images fall in two size
classes stops everything before a caption or TOML is written.
"""

EXPLAIN_EPILOG = """\
examples:
  charframe explain f00 --folder "krnk girl_f0512"
  charframe explain "LoRAInput/4_krnk/krnk girl_f0512/f12-longhair.png"
  charframe explain b24 --rules my_rules.toml
"""


def _add_rules(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", metavar="FILE", type=Path, help="caption rules file applied after charframe.toml [captions]")


def _add_tag_options(p: argparse.ArgumentParser) -> None:
    _add_rules(p)
    p.add_argument("--force", action="store_true", help="replace hand-edited captions too (a .bak copy is kept)")


def _add_toml_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vram", default="default", metavar="PROFILE", help="batch-size profile: default, 8gb, 12gb, 16gb, 24gb (default: default)")
    p.add_argument("--relative-to", metavar="DIR", type=Path, help="write image_dir relative to DIR (e.g. your sd-scripts checkout) instead of absolute")
    p.add_argument("--family", help="model family the dataset trains: sd15 (default) or sdxl (its buckets up to 2048 px "
                                    "in steps of 64 and its batch sizes per VRAM profile)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add tag, toml, prepare and explain."""
    dirs_help = "dataset folders (or folders holding them, such as LoRAInput)"
    p = sub.add_parser("tag", help="write a caption .txt beside every coded image", description="Write one caption per coded image, derived from its code and folder name.", epilog=TAG_EPILOG, formatter_class=_RAW)
    p.add_argument("dirs", nargs="+", metavar="DIR", help=dirs_help)
    _add_tag_options(p)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("toml", help="write the sd-scripts dataset TOML of a dataset folder", description="Write DIR/<DIR name>.toml for sd-scripts from folder names and image sizes.", epilog=TOML_EPILOG, formatter_class=_RAW)
    p.add_argument("dirs", nargs="+", metavar="DIR", help=dirs_help)
    _add_toml_options(p)
    p.set_defaults(func=cmd_toml)

    p = sub.add_parser("prepare", help="tag + toml for one or many dataset folders", description="Captions and dataset TOML in one go, all folders checked first.", epilog=PREPARE_EPILOG, formatter_class=_RAW)
    p.add_argument("dirs", nargs="+", metavar="DIR", help=dirs_help)
    _add_tag_options(p)
    _add_toml_options(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("explain", help="show the caption of a code and the rule behind each tag", description="Print the caption of an image code and, for each tag, the rule that produced it.", epilog=EXPLAIN_EPILOG, formatter_class=_RAW)
    p.add_argument("code", metavar="CODE", help="a code (f00), an image name (f12-x.png) or an image path")
    p.add_argument("--folder", metavar="NAME", help="the image's folder name (default: the parent folder of CODE, if a path)")
    _add_rules(p)
    p.set_defaults(func=cmd_explain)


def _rules(args: argparse.Namespace, start: Path):
    """None (each folder's project rules) unless --rules is given."""
    from charframe.dataset.captions import load_rules
    from charframe.project import find_project_root

    if args.rules is None:
        return None
    return load_rules(find_project_root(start), args.rules)


def cmd_tag(args: argparse.Namespace) -> int:
    from charframe.dataset.prepare import tag_dirs
    from charframe.dataset.scan import require_dirs

    roots = require_dirs(args.dirs)
    report = tag_dirs(roots, rules=_rules(args, roots[0]), force=args.force, progress=sys.stderr.isatty())
    return _kept_exit(report)


def _kept_exit(report) -> int:
    """Exit 1 when hand-edited captions were kept, with the flag that replaces them."""
    if report.kept:
        log.warning("  rerun with --force to replace the %d kept caption(s)", len(report.kept))
        return 1
    return 0


def cmd_toml(args: argparse.Namespace) -> int:
    from charframe.dataset.toml_writer import dataset_dirs, write_dataset_tomls
    from charframe.dataset.scan import require_dirs

    write_dataset_tomls(dataset_dirs(require_dirs(args.dirs)), vram=args.vram, relative_to=args.relative_to,
                        family=args.family)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from charframe.dataset.prepare import prepare_dirs
    from charframe.dataset.scan import require_dirs

    roots = require_dirs(args.dirs)
    report = prepare_dirs(roots, rules=_rules(args, roots[0]), force=args.force, vram=args.vram, relative_to=args.relative_to, progress=sys.stderr.isatty(),
                          family=args.family)
    return _kept_exit(report.tag)


def cmd_explain(args: argparse.Namespace) -> int:
    from charframe.dataset.captions import code_and_folder, load_rules
    from charframe.project import find_project_root

    code, folder = code_and_folder(args.code, args.folder)
    start = Path(args.code).parent if args.folder is None and Path(args.code).parent != Path(".") else Path.cwd()
    rules = load_rules(find_project_root(start), args.rules)
    pairs = rules.explain(code, folder)
    print(", ".join(tag for tag, _ in pairs))
    print()
    print(f"code {code.code}: kind {code.kind}, elevation {code.elevation}, azimuth {code.azimuth}" + (f", rest {code.rest!r}" if code.rest else "") + (f"; folder {folder!r}" if folder else "; no folder (no keywords)"))
    width = max((len(t) for t, _ in pairs), default=3)
    for tag, rule in pairs:
        origin = "" if rule.source == "default rules" else f"  [{rule.source}]"
        print(f"  {tag:<{width}}  {rule.name} ({rule.describe()}){origin}")
    return 0
