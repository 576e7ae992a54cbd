"""The one font charframe draws text with (DejaVu Sans, shipped in `charframe/data/fonts/`), and what it covers.

Pictures a user looks at (contact sheets, preview grids) must not depend on the fonts of the machine nor on
Pillow's built-in bitmap font, which has no "×", "°", "→" or "…": every text is drawn with the shipped
TrueType file, and `missing_glyphs` reads the font's own character map (the TrueType `cmap` table, formats
4 and 12) so a test can prove that every character a drawing used has a glyph, instead of trusting the eye.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from charframe.util.files import DATA_DIR

FONT_FILE: Path = DATA_DIR / "fonts" / "DejaVuSans.ttf"


@lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at `size` pixels."""
    return ImageFont.truetype(str(FONT_FILE), size=int(size))


def _cmap_subtable(data: bytes, at: int) -> set[int]:
    fmt = struct.unpack_from(">H", data, at)[0]
    out: set[int] = set()
    if fmt == 4:
        seg2 = struct.unpack_from(">H", data, at + 6)[0]
        n = seg2 // 2
        ends = struct.unpack_from(f">{n}H", data, at + 14)
        starts = struct.unpack_from(f">{n}H", data, at + 16 + seg2)
        deltas = struct.unpack_from(f">{n}h", data, at + 16 + 2 * seg2)
        ranges_at = at + 16 + 3 * seg2
        ranges = struct.unpack_from(f">{n}H", data, ranges_at)
        for i, (start, end, delta, rng) in enumerate(zip(starts, ends, deltas, ranges)):
            for c in range(start, end + 1):
                if c == 0xFFFF:
                    continue
                if rng == 0:
                    glyph = (c + delta) & 0xFFFF
                else:
                    glyph = struct.unpack_from(">H", data, ranges_at + 2 * i + rng + 2 * (c - start))[0]
                    glyph = (glyph + delta) & 0xFFFF if glyph else 0
                if glyph:
                    out.add(c)
    elif fmt == 12:
        groups = struct.unpack_from(">I", data, at + 12)[0]
        for g in range(groups):
            start, end, first_glyph = struct.unpack_from(">3I", data, at + 16 + 12 * g)
            out.update(range(start + (first_glyph == 0), end + 1))
    return out


@lru_cache(maxsize=None)
def covered(path: Path = FONT_FILE) -> frozenset[int]:
    """The Unicode code points that `path` (a TrueType file) has a glyph for."""
    data = path.read_bytes()
    count = struct.unpack_from(">H", data, 4)[0]
    tables = {data[12 + 16 * i:16 + 16 * i]: struct.unpack_from(">I", data, 20 + 16 * i)[0] for i in range(count)}
    cmap = tables[b"cmap"]
    points: set[int] = set()
    for i in range(struct.unpack_from(">H", data, cmap + 2)[0]):
        platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
        if platform == 0 or (platform == 3 and encoding in (1, 10)):  # the Unicode subtables
            points |= _cmap_subtable(data, cmap + offset)
    return frozenset(points)


def missing_glyphs(text: str, path: Path = FONT_FILE) -> set[str]:
    """The characters of `text` (line breaks aside) the font has no glyph for."""
    have = covered(path)
    return {ch for ch in text if ch not in "\n\r" and ord(ch) not in have}


def fit(text: str, size: int, width: float, smallest: int = 9) -> tuple[str, int]:
    """(`text`, a font size ≤ `size`) that fits `width` pixels: smaller type first, then an ellipsis."""
    for s in range(size, smallest - 1, -1):
        if font(s).getlength(text) <= width:
            return text, s
    f = font(smallest)
    while text and f.getlength(text + "…") > width:
        text = text[:-1]
    return (text + "…" if text else ""), smallest


def wrap(text: str, size: int, width: float) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` (a single too-long word is cut by `fit`)."""
    f = font(size)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if f.getlength(candidate) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return [ln if f.getlength(ln) <= width else fit(ln, size, width, smallest=size)[0] for ln in lines]


class Pen:
    """Draws text in the shipped font onto an image and records every string drawn (the glyph tests read
    `texts`); with `width`, text is made to fit (`fit`)."""

    def __init__(self, image: Image.Image, texts: list[str]) -> None:
        self.draw = ImageDraw.Draw(image)
        self.texts = texts

    def text(self, xy: tuple[float, float], text: str, size: int, fill: tuple[int, int, int] = (30, 30, 30),
             width: float | None = None, anchor: str = "la") -> None:
        if width is not None:
            text, size = fit(text, size, width)
        if text:
            self.texts.append(text)
            self.draw.text(xy, text, fill=fill, font=font(size), anchor=anchor)
