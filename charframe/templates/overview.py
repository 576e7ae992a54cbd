"""The contact sheet of a template set: every angle at a glance, labelled with its file name.

Rows are elevations (horizontal, from above, from below), columns are azimuths; each cell
shows the clay template with its code underneath, like the file-name chart of the original
framework. Mirrored views (5-7) say which view they mirror.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL_HEIGHT = {"f": 240, "b": 360}
TITLES = {"f": "FaceTemplate: upper-body (face) set", "b": "BodyTemplate: full-body set"}
ELEVATION_NAMES = {0: "0 horizontal", 1: "1 from above", 2: "2 from below"}
AZIMUTH_NAMES = {0: "0 front", 1: "1 front 45°", 2: "2 side", 3: "3 back 45°", 4: "4 behind",
                 5: "5 = 3 mirrored", 6: "6 = 2 mirrored", 7: "7 = 1 mirrored"}
PAPER, INK, FAINT = (246, 246, 244), (30, 30, 30), (110, 110, 110)


def thumbnail(img: np.ndarray, kind: str) -> np.ndarray:
    """The clay image scaled to the sheet's cell height (area filter)."""
    h = CELL_HEIGHT[kind]
    w = int(round(img.shape[1] * h / img.shape[0]))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def contact_sheet(kind: str, thumbs: dict[str, np.ndarray]) -> Image.Image:
    """A labelled grid of `thumbs` (code → thumbnail); rows/columns are the codes present."""
    elevations = sorted({int(c[1]) for c in thumbs})
    azimuths = sorted({int(c[2]) for c in thumbs})
    th = CELL_HEIGHT[kind]
    tw = next(iter(thumbs.values())).shape[1]
    gap, label_w, head_h, title_h, code_h = 12, 150, 34, 54, 34
    width = label_w + len(azimuths) * (tw + gap) + gap
    height = title_h + head_h + len(elevations) * (th + code_h + gap) + gap
    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 12), TITLES[kind], fill=INK, font=_font(26))
    draw.text((width - gap, 18), f"{kind}<elevation><azimuth>.png", fill=FAINT, font=_font(18), anchor="ra")
    small, code_font = _font(17), _font(24)
    for j, a in enumerate(azimuths):
        x = label_w + gap + j * (tw + gap)
        draw.text((x + tw // 2, title_h + head_h // 2), AZIMUTH_NAMES[a], fill=FAINT, font=small, anchor="mm")
    for i, e in enumerate(elevations):
        y = title_h + head_h + i * (th + code_h + gap)
        draw.text((gap, y + th // 2), ELEVATION_NAMES[e], fill=FAINT, font=small, anchor="lm")
        for j, a in enumerate(azimuths):
            code = f"{kind}{e}{a}"
            if code not in thumbs:
                continue
            x = label_w + gap + j * (tw + gap)
            tile = thumbs[code]
            sheet.paste(Image.fromarray(tile).convert("RGB"), (x, y))
            draw.text((x + tw // 2, y + th + code_h // 2), code, fill=INK, font=code_font, anchor="mm")
    return sheet
