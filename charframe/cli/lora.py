"""LoRA file commands: inspect, merge (block weights), compress (SVD), mix.

Thin layer: arguments → `charframe.lora.*` calls. torch is imported inside the command functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_RAW = argparse.RawDescriptionHelpFormatter

MERGE_EPILOG = """\
examples:
  charframe merge LoRAOutput/krnk/krnk-Lora3x3A50p-AdamW8-128-100-1000.safetensors --preset FACE
      → …-1000-FACE.safetensors beside the input
  charframe merge a.safetensors b.safetensors --preset BODY
  charframe merge a.safetensors --preset 0,1,1,1,1,1,0,0,0,1,0,0,0,0,1,0,1,1,1,0,1,1,1,0,0,0.5
  charframe merge a.safetensors --preset MYFACE --presets my_presets.toml

families: each file's model family (SD1.x or SDXL) is read from its keys and shapes; a preset
or weight list is taken in that family's block layout.
SD1.x weights: 26 in the order BASE, IN00…IN11, M00, OUT00…OUT11 (BASE = text encoder), or the
17-weight form BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03…OUT11 (other blocks get 1).
SDXL weights (as LoRA Block Weight takes them): 20 in the order BASE, IN00…IN08, M00, OUT00…OUT08
(BASE = both text encoders), or the 12-weight form BASE, IN04, IN05, IN07, IN08, M00, OUT00…OUT05
(other blocks get 0), or 26.
0 removes a block's modules; any other weight scales their update exactly, for LoRA, LoCon,
LoHa and LoKr alike. Presets: FACE, BODY, ALL, NONE, ALL0.5 (both families; SDXL's FACE/BODY are
SD1.x's carried over by scale), INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL (SD1.x), plus your own in
[block_presets] / [sdxl.block_presets] of the project's charframe.toml or of --presets FILE.
"""

COMPRESS_EPILOG = """\
examples:
  charframe compress krnk-FACE.safetensors                 → krnk-FACE-SvR16.safetensors
  charframe compress *.safetensors --sv-ratio 8            → …-SvR8.safetensors
  charframe compress a.safetensors --sv-fro 0.9            → a-SvFro0.9.safetensors
  charframe compress a.safetensors --rank 32 --dtype bf16  → a-Rank32.safetensors

Each module's update ΔW is re-factored by SVD and truncated. LoRA/LoCon: through QR of the
factors (never the full matrix; identical result to a full SVD, much faster). LoHa/LoKr: through
their full ΔW, written as plain LoRA. One alpha per file = the largest kept rank (scale 1 there).
sv_ratio keeps singular values > max/ratio (1 … --max-rank); sd-scripts' resize_lora keeps one more.
"""

MIX_EPILOG = """\
examples:
  charframe mix krnk-FACE.safetensors:0.7 tyank-FACE.safetensors:0.5
      → krnk-FACE+tyank-FACE-mix.safetensors (exact weighted sum of the updates)
  charframe mix a.safetensors:1 b.safetensors:-0.3 --rank 64 -o ab.safetensors
  charframe mix a.safetensors:0.7 b.safetensors:0.5 --sv-ratio 16

Use two characters together without training a group LoRA. FILE:WEIGHT (weight 1 if omitted).
Without a rank option every singular value is kept, so the result is exactly Σ weight·ΔW.
Works for SD1.x and SDXL LoRAs; the inputs must be of the same model family.
"""


def _add_rank_options(p: argparse.ArgumentParser, default_ratio: float | None) -> None:
    crit = p.add_mutually_exclusive_group()
    ratio_help = "keep singular values > max/X" + (f" (default {default_ratio:g})" if default_ratio else "")
    crit.add_argument("--sv-ratio", type=float, metavar="X", help=ratio_help)
    crit.add_argument("--sv-fro", type=float, metavar="F", help="keep the smallest rank whose Frobenius fraction ≥ F (0–1)")
    crit.add_argument("--sv-cumulative", type=float, metavar="F", help="keep the smallest rank whose share of Σ singular values ≥ F (0–1)")
    crit.add_argument("--rank", type=int, metavar="R", help="fixed rank R")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="stored precision (default fp16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--verbose", dest="per_module", action="store_true", help="print kept rank and Frobenius fraction per module")


def _command(sub, name: str, func, help: str, description: str, epilog: str, what: str = "FILE") -> argparse.ArgumentParser:
    """One subcommand taking one or more input files."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=_RAW)
    p.add_argument("files", nargs="+", metavar=what)
    p.set_defaults(func=func)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Add inspect, merge, compress and mix."""
    p = _command(
        sub, "inspect", cmd_inspect, "show a LoRA file's family, type, blocks, ranks, alphas, size and metadata",
        "Show what a LoRA file holds: model family (SD1.x, SDXL), network type, modules per block, ranks, alphas, "
        "size, metadata.",
        "example:\n  charframe inspect LoRAOutput/krnk/*.safetensors --all-metadata\n",
    )  # fmt: skip
    p.add_argument("--all-metadata", action="store_true", help="print every metadata key in full")

    p = _command(
        sub, "merge", cmd_merge, "block-weight merge (FACE/BODY/… presets; SD1.x 26/17, SDXL 20/12 weights)",
        "Scale each block of a LoRA (SD1.x or SDXL) by a weight (0 removes it) and save <stem>-<PRESET>.safetensors.",
        MERGE_EPILOG,
    )  # fmt: skip
    p.add_argument("--preset", required=True, metavar="NAME|WEIGHTS",
                   help="preset name or comma-separated weights (SD1.x 26/17, SDXL 20/12)")
    p.add_argument("--presets", action="append", default=[], metavar="FILE",
                   help="TOML file with a [block_presets] (SD1.x) / [sdxl.block_presets] (SDXL) table (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    p = _command(
        sub, "compress", cmd_compress, "exact fast SVD compression (default sv_ratio 16, max rank 128)",
        "Re-factor every module's update by SVD and truncate it (SD1.x and SDXL LoRAs); saves <stem>-SvR16.safetensors.",
        COMPRESS_EPILOG,
    )  # fmt: skip
    _add_rank_options(p, default_ratio=16)
    p.add_argument("--max-rank", type=int, default=128, metavar="R", help="upper bound for dynamic criteria (default 128)")

    p = _command(
        sub, "mix", cmd_mix, "weighted sum of LoRAs as one LoRA (A.safetensors:0.7 B.safetensors:0.5)",
        "Make one LoRA whose update is the weighted sum of the inputs' updates.", MIX_EPILOG, "FILE[:WEIGHT]",
    )  # fmt: skip
    _add_rank_options(p, default_ratio=None)
    p.add_argument("--max-rank", type=int, default=None, metavar="R", help="upper bound for dynamic criteria (default none)")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default <A>+<B>-mix.safetensors beside A)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from charframe.lora.ops.inspect import format_report, inspect_file

    for i, f in enumerate(args.files):
        report = format_report(inspect_file(f), all_metadata=args.all_metadata, all_metadata_hint="--all-metadata")
        print(("\n" if i else "") + report)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from charframe.lora.ops.merge import merge_files

    results = merge_files(args.files, args.preset, preset_files=args.presets, overwrite=args.overwrite, progress=not args.quiet)
    for result in results:
        print(result.summary())
    return 0


def _rank_rule(args: argparse.Namespace, default_ratio: float | None):
    from charframe.lora.functional import RankRule

    choice = [
        ("sv_ratio", args.sv_ratio), ("sv_fro", args.sv_fro),
        ("sv_cumulative", args.sv_cumulative), ("rank", args.rank),
    ]  # fmt: skip
    kind, value = next(((k, v) for k, v in choice if v is not None), ("sv_ratio", default_ratio))
    return RankRule("all", 0, None) if value is None else RankRule(kind, float(value), args.max_rank)


def _print_modules(reports, per_module: bool) -> None:
    if per_module:
        for r in reports:
            print("  " + r.line())


def cmd_compress(args: argparse.Namespace) -> int:
    from charframe.lora.ops.compress import compress_files

    rule = _rank_rule(args, default_ratio=16)
    for result in compress_files(args.files, rule, dtype=args.dtype, overwrite=args.overwrite, progress=not args.quiet):
        _print_modules(result.modules, args.per_module)
        print(result.summary())
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    from charframe.lora.ops.mix import mix_files, parse_mix_arg

    rule = _rank_rule(args, default_ratio=None)
    inputs = [parse_mix_arg(a) for a in args.files]
    result = mix_files(
        inputs, output=Path(args.output) if args.output else None, rule=rule,
        dtype=args.dtype, overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    _print_modules(result.modules, args.per_module)
    print(result.summary())
    return 0
