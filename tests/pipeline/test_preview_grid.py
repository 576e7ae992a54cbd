"""The preview grid's layout: a title block that fits, gaps between tiles, the strength sweep set apart."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from charframe.pipeline.preview import GAP, SWEEP_GAP, Row, preview_grid
from charframe.util.fonts import missing_glyphs


def test_grid_has_gaps_a_title_block_and_a_sweep() -> None:
    img = Image.new("RGB", (64, 64), (10, 200, 10))
    rows = [Row("base", None, [img] * 4), Row("LoRA", Path("krnk-x.safetensors"), [img] * 4, [img] * 3),
            Row("previous", Path("krnk-old.safetensors"), [img] * 4, [img] * 3)]
    title = ["krnk face preview", "rows: base = no LoRA, LoRA = krnk-x.safetensors … " * 6,
             "prompt: krnk, 1girl, “quoted” → <scene>", "seeds 1, 2; 20 steps, CFG 7, 512 px"]
    columns = [f"{scene}\nseed {seed}" for scene in ("in a forest", "on a beach by the sea") for seed in (1, 2)]
    sweep = [f"strength {w:g}\nin a forest, seed 1" for w in (0.6, 0.8, 1.0)]
    layout = preview_grid(title, rows, columns, sweep, 128)
    w, h = layout.image.size
    assert layout.title_box[2] <= w - 16 and layout.title_box[3] < min(b[1] for b in layout.tiles.values())
    assert missing_glyphs("".join(layout.texts)) == set()
    assert (0, 4) not in layout.tiles and len(layout.tiles) == 4 + 2 * 7  # base has no sweep
    for (i, j), box in layout.tiles.items():
        assert box[2] - box[0] == box[3] - box[1] == 128 and box[2] <= w and box[3] <= h
        right, below = layout.tiles.get((i, j + 1)), layout.tiles.get((i + 1, j))
        if right:
            assert right[0] - box[2] == (SWEEP_GAP + GAP if j == 3 else GAP)
        if below:
            assert below[1] - box[3] == GAP
    assert "strength 0.6" in layout.texts and "no LoRA, no sweep" in layout.texts
