"""`charframe templates`: render the pose templates and their exact control maps."""

from __future__ import annotations

import argparse

from charframe.errors import CharframeError

MAP_NAMES = ("depth", "normal", "softedge", "canny", "openpose", "mask")  # = templates.ALL_MAPS

EPILOG = """\
Every file is rendered from one 3D mannequin, so the control maps match the template exactly:
  FaceTemplate/f12.png                   clay template (f: bust shot, b: full figure)
  FaceTemplate/control/<map>/f12.png     depth, normal, softedge, canny, openpose, mask
  FaceTemplate/overview.png              contact sheet of all angles
Codes (CONVENTIONS §2): f/b, elevation 0 horizontal / 1 from above / 2 from below, azimuth
0 front in 45° steps counter-clockwise seen from above (2 side: the figure faces image-left,
4 straight behind); 5-7 are mirrors of 3-1 for asymmetric characters.
Files whose pixels would not change are left untouched; other files in the folders (your own
f12-longhair.png, say) are never touched.

examples:
  charframe templates                          # the project's FaceTemplate/ and BodyTemplate/
  charframe templates --azimuths 0-7           # add the mirrored views 5-7
  charframe templates --out work --size 512 --maps softedge openpose
  charframe templates --elevation-deg 20       # gentler from above / from below
"""


def parse_azimuths(text: str) -> list[int]:
    """'0-4', '0-7', '0,2,4' or '3' → sorted azimuth digits."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"azimuths are digits 0-7 like 0-4, 0-7 or 0,2,4; got {text!r}")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last <= 7:
            raise argparse.ArgumentTypeError(f"azimuths are digits 0-7 like 0-4, 0-7 or 0,2,4; got {text!r}")
        out.update(range(first, last + 1))
    return sorted(out)


def parse_maps(values: list[str]) -> tuple[str, ...]:
    names: list[str] = []
    for value in values:
        names += [v for v in value.replace(",", " ").split() if v]
    if names in (["all"], []):
        return MAP_NAMES
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in MAP_NAMES]
    if unknown:
        raise CharframeError(f"unknown map(s) {', '.join(unknown)}; choose from {', '.join(MAP_NAMES)}, all, none")
    return tuple(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    from charframe.templates.writer import generate_templates

    generate_templates(args.out_root, size=args.size, azimuths=args.azimuths,
                       elevation_deg=args.elevation_deg, maps=parse_maps(args.maps), progress=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `charframe templates`."""
    p = sub.add_parser(
        "templates",
        help="render FaceTemplate/ and BodyTemplate/ (clay templates + exact control maps)",
        description="Render the pose templates of every code from a procedural 3D mannequin, with "
                    "depth, normal, soft-edge, canny, OpenPose and mask maps taken from the same geometry.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", dest="out_root", metavar="DIR", default=None,
                   help="write DIR/FaceTemplate and DIR/BodyTemplate (default: the project's own folders)")
    p.add_argument("--size", type=int, default=1024,
                   help="image height in pixels; f is size×size, b is size/2×size (default 1024)")
    p.add_argument("--azimuths", type=parse_azimuths, default=list(range(5)), metavar="0-4|0-7",
                   help="azimuth digits to render (default 0-4; 5-7 are mirrors of 3-1)")
    p.add_argument("--elevation-deg", type=float, default=30.0, metavar="DEG",
                   help="camera angle of elevation 1 (from above, +DEG) and 2 (from below, -DEG); default 30")
    p.add_argument("--maps", nargs="+", default=["all"], metavar="MAP",
                   help=f"control maps to write: {', '.join(MAP_NAMES)}, all (default) or none")
    p.set_defaults(func=run)
