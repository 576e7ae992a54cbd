"""Contact sheets of one image set, laid out the way the method thinks about it.

One sheet shape serves the template overview (`FaceTemplate/overview.png`), the generated candidates
(`LoRAWork/<kw>/<set>/contact.png`) and the picks (`contact-picked.png`): rows are the elevations (0
horizontal, 1 from above, 2 from below), columns the azimuths (0 front … 4 behind, 5-7 mirrored), so a
code sits where its camera is. In each cell the template comes first, then the candidates; under each
candidate its scores as (label, value) lines (IoU and edge today; an identity score is one more pair),
the pick outlined (green when the scores chose it, orange when picked by hand) with the reason it won.
Face sets have square tiles, body sets 1:2 tiles, matching the pictures. All text is DejaVu Sans
(`charframe.util.fonts`), so "×", "°" and "→" print, and every string drawn is recorded in the returned
layout together with the boxes of the title, cells, tiles and outlines: the tests check the geometry
from the drawing itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from charframe.dataset.naming import parse_code
from charframe.util.fonts import Pen, font, wrap

ImageLike = Union[Path, np.ndarray, Image.Image, None]
Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive)
Score = tuple[str, Union[float, str]]

ELEVATION_NAMES = {0: "0 horizontal", 1: "1 from above", 2: "2 from below"}
AZIMUTH_NAMES = {0: "0 front", 1: "1 front 45°", 2: "2 side", 3: "3 back 45°", 4: "4 behind",
                 5: "5 = 3 mirrored", 6: "6 = 2 mirrored", 7: "7 = 1 mirrored"}
PAPER, CELL_BG, INK, FAINT, MISSING = (246, 246, 244), (232, 232, 228), (30, 30, 30), (105, 105, 105), (205, 205, 200)
PICK, HAND = (0, 150, 60), (215, 110, 0)
#: tile height per set kind; the width follows the set's aspect (face 1:1, body 1:2)
ASPECT = {"f": 1.0, "b": 0.5}
MARGIN, GAP, PAD, ROW_LABEL_W, LINE = 16, 14, 8, 118, 15
TITLE_SIZE, SUBTITLE_SIZE, HEAD_SIZE, CODE_SIZE, TEXT_SIZE = 22, 14, 14, 17, 12


@dataclass(frozen=True)
class Tile:
    """One picture of a cell: the template or a candidate."""

    image: ImageLike                       # None: not there (drawn as a grey "missing" box)
    label: str = ""                        # "template", "#2"
    scores: tuple[Score, ...] = ()         # lines under the picture: ("IoU", 0.912), ("edge", 0.71)
    mark: str = ""                         # "" | "pick" (chosen by the scores) | "hand" (chosen by hand)
    note: str = ""                         # why it is the pick: "best IoU", "IoU tie → best edge", "by hand"
    missing: str = "missing"               # what an absent picture says


@dataclass(frozen=True)
class Cell:
    code: str                              # "f12": where the cell goes (elevation row, azimuth column)
    tiles: tuple[Tile, ...]


@dataclass
class SheetLayout:
    """The drawn sheet and where everything went (pixel boxes, right/bottom exclusive)."""

    image: Image.Image
    kind: str
    title_box: Box
    cells: dict[str, Box] = field(default_factory=dict)
    tiles: dict[tuple[str, int], Box] = field(default_factory=dict)
    outlines: dict[str, Box] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


def _picture(image: ImageLike) -> Image.Image | None:
    if image is None:
        return None
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        arr = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("RGB")
    if not Path(image).is_file():
        return None
    with Image.open(image) as im:
        im.load()
        return im.convert("RGB")


def _fitted(img: Image.Image, w: int, h: int) -> tuple[Image.Image, int, int]:
    """`img` scaled (area filter) to fit w×h, and its offset inside the box (centred)."""
    k = min(w / img.width, h / img.height)
    size = (max(1, round(img.width * k)), max(1, round(img.height * k)))
    return img.resize(size, Image.Resampling.BOX if k < 1 else Image.Resampling.LANCZOS), (w - size[0]) // 2, (h - size[1]) // 2


def _value(v: float | str) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def sheet_kind(codes: Sequence[str]) -> str:
    kinds = {c[0] for c in codes}
    return kinds.pop() if len(kinds) == 1 else "f"


def draw_sheet(title: str, cells: Sequence[Cell], *, subtitle: str = "", tile_height: int | None = None,
               kind: str | None = None, legend: str = "") -> SheetLayout:
    """Lay `cells` out as elevation rows × azimuth columns; return the picture and its layout."""
    kind = kind or sheet_kind([c.code for c in cells])
    th = tile_height or (128 if kind == "f" else 224)
    tw = round(th * ASPECT.get(kind, 1.0))
    places = {}
    for cell in cells:
        code = parse_code(cell.code)
        places[cell.code] = (code.elevation, code.azimuth) if code else (0, len(places))
    rows = sorted({e for e, _ in places.values()})
    cols = sorted({a for _, a in places.values()})
    n_tiles = max((len(c.tiles) for c in cells), default=1) or 1
    score_lines = max((len(t.scores) for c in cells for t in c.tiles), default=0)
    has_label = any(t.label for c in cells for t in c.tiles)
    has_note = any(t.note for c in cells for t in c.tiles)
    text_h = (has_label + score_lines + has_note) * LINE + (8 if has_label or score_lines or has_note else 0)
    cell_w = 2 * PAD + n_tiles * tw + (n_tiles - 1) * GAP // 2
    cell_h = PAD + CODE_SIZE + 8 + th + text_h + PAD
    grid_w = ROW_LABEL_W + len(cols) * cell_w + (len(cols) - 1) * GAP
    width = max(grid_w + 2 * MARGIN, 480)
    inner = width - 2 * MARGIN
    title_lines = wrap(title, TITLE_SIZE, inner)
    sub_lines = wrap(subtitle, SUBTITLE_SIZE, inner) if subtitle else []
    legend_lines = wrap(legend, SUBTITLE_SIZE, inner) if legend else []
    title_h = len(title_lines) * (TITLE_SIZE + 6) + (len(sub_lines) + len(legend_lines)) * (SUBTITLE_SIZE + 5)
    head_y = MARGIN + title_h + 10
    grid_y = head_y + HEAD_SIZE + 10
    height = grid_y + len(rows) * cell_h + (len(rows) - 1) * GAP + MARGIN
    sheet = Image.new("RGB", (width, height), PAPER)
    texts: list[str] = []
    pen = Pen(sheet, texts)
    y = MARGIN
    title_w = 0
    for line in title_lines:
        pen.text((MARGIN, y), line, TITLE_SIZE)
        title_w = max(title_w, round(font(TITLE_SIZE).getlength(line)))
        y += TITLE_SIZE + 6
    for line, colour in [(ln, FAINT) for ln in sub_lines] + [(ln, FAINT) for ln in legend_lines]:
        pen.text((MARGIN, y), line, SUBTITLE_SIZE, colour)
        title_w = max(title_w, round(font(SUBTITLE_SIZE).getlength(line)))
        y += SUBTITLE_SIZE + 5
    layout = SheetLayout(sheet, kind, (MARGIN, MARGIN, MARGIN + title_w, y), texts=texts)
    x0 = MARGIN + ROW_LABEL_W
    for j, a in enumerate(cols):
        x = x0 + j * (cell_w + GAP)
        pen.text((x + cell_w / 2, head_y), AZIMUTH_NAMES.get(a, str(a)), HEAD_SIZE, FAINT, width=cell_w, anchor="ma")
    for i, e in enumerate(rows):
        y = grid_y + i * (cell_h + GAP)
        pen.text((MARGIN, y + cell_h / 2), ELEVATION_NAMES.get(e, str(e)), HEAD_SIZE, FAINT, width=ROW_LABEL_W - 8,
                 anchor="lm")
    draw = pen.draw
    for cell in cells:
        e, a = places[cell.code]
        cx, cy = x0 + cols.index(a) * (cell_w + GAP), grid_y + rows.index(e) * (cell_h + GAP)
        box = (cx, cy, cx + cell_w, cy + cell_h)
        layout.cells[cell.code] = box
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=CELL_BG)
        pen.text((cx + PAD, cy + PAD - 2), cell.code, CODE_SIZE)
        ty = cy + PAD + CODE_SIZE + 8
        for k, tile in enumerate(cell.tiles):
            tx = cx + PAD + k * (tw + GAP // 2)
            layout.tiles[(cell.code, k)] = (tx, ty, tx + tw, ty + th)
            _draw_tile(sheet, pen, tile, tx, ty, tw, th, has_label)
            if tile.mark:
                colour = HAND if tile.mark == "hand" else PICK
                o = (tx - 3, ty - 3, tx + tw + 3, ty + th + text_h)
                draw.rectangle((o[0], o[1], o[2] - 1, o[3] - 1), outline=colour, width=3)
                layout.outlines[cell.code] = o
    return layout


def _draw_tile(sheet: Image.Image, pen: Pen, tile: Tile, x: int, y: int, w: int, h: int, has_label: bool) -> None:
    img = _picture(tile.image)
    if img is None:
        pen.draw.rectangle((x, y, x + w - 1, y + h - 1), fill=MISSING)
        pen.text((x + w / 2, y + h / 2), tile.missing, TEXT_SIZE, FAINT, width=w - 4, anchor="mm")
    else:
        pen.draw.rectangle((x, y, x + w - 1, y + h - 1), fill=PAPER)
        small, dx, dy = _fitted(img, w, h)
        sheet.paste(small, (x + dx, y + dy))
    ty = y + h + 3
    if has_label:
        pen.text((x, ty), tile.label, TEXT_SIZE, INK if tile.mark else FAINT, width=w)
        ty += LINE
    for label, value in tile.scores:
        pen.text((x, ty), f"{label} {_value(value)}", TEXT_SIZE, INK, width=w)
        ty += LINE
    if tile.note:
        colour = HAND if tile.mark == "hand" else PICK if tile.mark else FAINT
        pen.text((x, ty), tile.note, TEXT_SIZE, colour, width=w)
