"""The one contact-sheet layout: elevation rows × azimuth columns, 1:2 body tiles, outlines inside their cells,
titles that fit, and every glyph drawn present in the shipped font (checked from the font's own cmap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from charframe.dataset.sheets import HAND, MISSING, PICK, Cell, SheetLayout, Tile, draw_sheet
from charframe.util.fonts import FONT_FILE, covered, font, missing_glyphs


def _inside(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _check_common(layout: SheetLayout) -> None:
    w, h = layout.image.size
    assert 0 <= layout.title_box[0] and layout.title_box[2] <= w and layout.title_box[3] <= h
    for (code, _), box in layout.tiles.items():
        assert _inside(box, layout.cells[code])
    for code, box in layout.outlines.items():
        assert _inside(box, layout.cells[code]), (code, box, layout.cells[code])
    drawn = "".join(layout.texts)
    assert drawn and missing_glyphs(drawn) == set()
    boxes = sorted(layout.cells.values())
    for a, b in zip(boxes, boxes[1:]):  # cells never overlap
        assert a[2] <= b[0] or a[3] <= b[1] or b[3] <= a[1]


def _solid(path: Path, size: tuple[int, int], value: int) -> Path:
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def test_body_sheet_rows_columns_tiles_and_outlines(tmp_path: Path) -> None:
    pic = _solid(tmp_path / "b.png", (64, 128), 200)
    cells = [Cell(code, (Tile(np.zeros((128, 64, 3), np.uint8), "template"),
                         Tile(pic, "#0", (("IoU", 0.91), ("edge", 0.5)), "pick", "IoU tie → best edge"),
                         Tile(None, "#1", (("IoU", 0.2), ("edge", 0.1), ("identity", "n/a")))))
             for code in ("b00", "b02", "b12", "b24")]
    cells[2] = Cell("b12", (cells[2].tiles[0], Tile(pic, "#0"), Tile(pic, "#1", (("IoU", 0.3),), "hand", "picked by hand")))
    long_title = "krnk body-sf: picks for 4 of 4 codes × 2 candidates → a title far longer than the grid is wide " * 3
    layout = draw_sheet(long_title, cells, subtitle="rows: elevation, columns: azimuth (45° steps)")
    _check_common(layout)
    assert layout.kind == "b"
    for box in layout.tiles.values():
        assert (box[3] - box[1]) == 2 * (box[2] - box[0])  # body tiles are 1:2, like the pictures
    # the code's place: rows by elevation, columns by azimuth
    c = layout.cells
    assert c["b00"][1] == c["b02"][1] < c["b12"][1] < c["b24"][1]
    assert c["b00"][0] < c["b02"][0] == c["b12"][0] < c["b24"][0]
    px = np.asarray(layout.image)
    x0, y0, x1, y1 = layout.tiles[("b00", 1)]
    assert px[(y0 + y1) // 2, (x0 + x1) // 2].tolist() == [200, 200, 200]
    x0, y0, x1, y1 = layout.tiles[("b00", 2)]
    assert px[y0 + 2, x0 + 2].tolist() == list(MISSING)
    x0, y0, _, _ = layout.outlines["b00"]
    assert px[y0 + 1, x0 + 1].tolist() == list(PICK)
    x0, y0, _, _ = layout.outlines["b12"]
    assert px[y0 + 1, x0 + 1].tolist() == list(HAND)
    # three score lines (IoU, edge, identity) fit under each tile: the outline reaches below the lowest
    assert layout.outlines["b00"][3] - layout.tiles[("b00", 1)][3] >= 5 * 15
    assert any(t.startswith("identity") for t in layout.texts)
    assert layout.title_box[2] - layout.title_box[0] <= layout.image.size[0] - 2 * 16
    assert sum(t.startswith("krnk body-sf") for t in layout.texts) == 1  # wrapped, not cut


def test_face_sheet_square_tiles_and_mirrored_columns() -> None:
    cells = [Cell(code, (Tile(np.full((50, 50), 90, np.uint8)),)) for code in ("f00", "f15", "f27")]
    layout = draw_sheet("FaceTemplate: upper-body (face) set", cells, tile_height=100)
    _check_common(layout)
    assert all(b[2] - b[0] == b[3] - b[1] == 100 for b in layout.tiles.values())
    assert {"0 front", "5 = 3 mirrored", "7 = 1 mirrored", "2 from below"} <= set(layout.texts)


def test_font_cmap_agrees_with_what_freetype_draws() -> None:
    have = covered()
    assert len(have) > 3000 and {ord(c) for c in "×°→…·—✔ĀΩЖ"} <= have
    assert ord("✋") not in have and missing_glyphs("f12 × ✋") == {"✋"}

    def drawn(ch: str) -> np.ndarray:
        img = Image.new("L", (40, 40))
        ImageDraw.Draw(img).text((8, 8), ch, fill=255, font=font(20))
        return np.asarray(img)

    notdef = drawn("\U000f0000")  # a private-use point: FreeType draws the .notdef box
    for ch in "A×→✔Ж✋\u2fd0\U0001f600":
        assert (not np.array_equal(drawn(ch), notdef)) == (ord(ch) in have), ch
    assert FONT_FILE.with_name("LICENSE-DejaVu.txt").is_file()


@pytest.mark.parametrize("kind", ["f", "b"])
def test_template_overview_uses_the_sheet(kind: str) -> None:
    from charframe.templates.overview import CELL_HEIGHT, overview_sheet

    h = CELL_HEIGHT[kind]
    w = h if kind == "f" else h // 2
    thumbs = {f"{kind}{e}{a}": np.full((h, w), 120, np.uint8) for e in range(3) for a in range(5)}
    sheet = overview_sheet(kind, thumbs)
    assert sheet.size[0] > 5 * w and sheet.size[1] > 3 * h
