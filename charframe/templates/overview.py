"""The contact sheet of a template set: every angle at a glance, labelled with its file name.

Rows are elevations (horizontal, from above, from below), columns are azimuths; each cell shows the clay
template under its code, like the file-name chart of the original framework. Mirrored views (5-7) say
which view they mirror. The sheet itself is `charframe.dataset.sheets`, the one layout of every set.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from charframe.dataset.sheets import Cell, Tile, draw_sheet

CELL_HEIGHT = {"f": 240, "b": 360}
TITLES = {"f": "FaceTemplate: upper-body (face) set", "b": "BodyTemplate: full-body set"}


def thumbnail(img: np.ndarray, kind: str) -> np.ndarray:
    """The clay image scaled to the sheet's cell height (area filter)."""
    h = CELL_HEIGHT[kind]
    w = int(round(img.shape[1] * h / img.shape[0]))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def overview_sheet(kind: str, thumbs: dict[str, np.ndarray]) -> Image.Image:
    """A labelled grid of `thumbs` (code → thumbnail); rows/columns are the codes present."""
    cells = [Cell(code, (Tile(thumbs[code]),)) for code in sorted(thumbs)]
    subtitle = f"file names {kind}<elevation><azimuth>.png; rows: elevation, columns: azimuth (45° steps)"
    return draw_sheet(TITLES[kind], cells, subtitle=subtitle, tile_height=CELL_HEIGHT[kind], kind=kind).image
