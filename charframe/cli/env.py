"""`charframe env`: the versions and the device to paste into a bug report (see charframe.deps)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env",
        help="print charframe's, Python's and every dependency's version and the CUDA device (for bug reports)",
        description="Versions of charframe, Python, torch, diffusers, transformers, accelerate, LyCORIS, "
                    "bitsandbytes, OpenCV … and the CUDA device torch sees. Paste the output into a bug report.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from charframe.deps import report

    rows = report()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
