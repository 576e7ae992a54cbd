"""A labelled contact sheet of one generated set: one row per code, one column per candidate (PIL only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PAPER, INK, FAINT, MISSING = (246, 246, 244), (30, 30, 30), (120, 120, 120), (215, 215, 212)
CELL = 160


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def contact_sheet(title: str, cells: Mapping[str, list[Path | None]], marks: Mapping[str, int] | None = None) -> Image.Image:
    """`cells`: code → candidate image paths (None = not generated). `marks`: code → picked index (framed)."""
    codes = list(cells)
    columns = max((len(v) for v in cells.values()), default=1)
    first = next((p for paths in cells.values() for p in paths if p is not None), None)
    aspect = 1.0
    if first is not None:
        with Image.open(first) as im:
            aspect = im.width / im.height
    cw, ch = (CELL, round(CELL / aspect)) if aspect >= 1 else (round(CELL * aspect), CELL)
    gap, label_w, head_h, title_h = 10, 70, 26, 44
    width = label_w + columns * (cw + gap) + gap
    height = title_h + head_h + len(codes) * (ch + gap) + gap
    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 10), title, fill=INK, font=_font(22))
    small, big = _font(15), _font(22)
    for j in range(columns):
        draw.text((label_w + gap + j * (cw + gap) + cw // 2, title_h + head_h // 2), f"#{j}", fill=FAINT, font=small, anchor="mm")
    for i, code in enumerate(codes):
        y = title_h + head_h + i * (ch + gap)
        draw.text((gap, y + ch // 2), code, fill=INK, font=big, anchor="lm")
        for j, path in enumerate(cells[code]):
            x = label_w + gap + j * (cw + gap)
            if path is None:
                draw.rectangle((x, y, x + cw - 1, y + ch - 1), fill=MISSING)
                continue
            with Image.open(path) as im:
                sheet.paste(im.convert("RGB").resize((cw, ch), Image.BOX), (x, y))
            if marks and marks.get(code) == j:
                draw.rectangle((x - 3, y - 3, x + cw + 2, y + ch + 2), outline=(220, 40, 40), width=4)
    return sheet
