"""The stage report: one HTML page per stage to look at, `LoRAOutput/<out>/<out>-<stage>-report.html`.

It shows what the quality loop decided and why: the identity-vs-step plot of the checkpoints (inline SVG) with the
chosen step marked and the rule's reason, the preview grids of the chosen and the last step, the stage's preview
grid (base, LoRA, merged, compressed), the per-code identity table of the training images (with thumbnails), and
the candidates that picking rejected (not the character, or codes left without a pick) with why. Every picture is
linked by a path relative to the page (nothing is copied); a small script marks a picture that does not load, so
a broken link shows at a glance (and a headless browser can count them: `body[data-broken]`).

`charframe report krnk` rewrites and prints the pages of a character's stages (`--open` opens them); the score
step writes its stage's page each time it runs.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterable

from charframe.cleaning.pick import PICKS_FILE, read_info
from charframe.pipeline.score_file import (
    cost_line, cost_path, dataset_pictures, read_cost, read_score, report_path, score_path,
)
from charframe.pipeline.stages import StageJob
from charframe.util.files import atomic_write_text
_CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}h1{font-size:22px}h2{font-size:18px;
margin-top:28px;border-bottom:1px solid #ccc}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}img.grid{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}img.thumb{height:
72px;image-rendering:pixelated}.chosen{background:#e6f6e6}.bad{color:#b00}.broken{outline:3px solid red}.note{color:#555}"""
_SCRIPT = """window.addEventListener('load',function(){var n=0;document.querySelectorAll('img').forEach(function(i){
if(!i.complete||i.naturalWidth===0){n++;i.classList.add('broken');}});document.body.dataset.broken=String(n);});"""


def _rel(target: Path, page: Path) -> str:
    return Path(os.path.relpath(target, page.parent)).as_posix()


def _img(target: Path, page: Path, cls: str, alt: str) -> str:
    return f'<img class="{cls}" src="{html.escape(_rel(target, page))}" alt="{html.escape(alt)}">'


def plot_svg(points: list[tuple[int, float]], chosen: int, threshold: float | None, w: int = 640, h: int = 260) -> str:
    """An inline SVG line plot of identity (y, lower = better) over step (x), the chosen step marked."""
    if not points:
        return '<p class="note">No identity scores (no identity model): the last step is used.</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo, hi = min(ys + ([threshold] if threshold else [])), max(ys + ([threshold] if threshold else []))
    span_y, span_x = (hi - lo) or 1.0, (max(xs) - min(xs)) or 1
    left, right, top, bottom = 60, 20, 20, 40

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - min(xs)) / span_x * (w - left - right), top + (hi - y) / span_y * (h - top - bottom))

    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(x, y) for x, y in points))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
             f'aria-label="identity by step">',
             f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="#fafafa" '
             f'stroke="#ccc"/>', f'<polyline fill="none" stroke="#2a6fdb" stroke-width="2" points="{line}"/>']
    if threshold is not None and lo <= threshold <= hi:
        _, ty = px(min(xs), threshold)
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#b00" '
                     f'stroke-dasharray="4 3"/><text x="{w - right - 4}" y="{ty - 4:.1f}" font-size="11" '
                     f'text-anchor="end" fill="#b00">same-character threshold {threshold:.3f}</text>')
    for x, y in points:
        cx, cy = px(x, y)
        colour = "#1a8f1a" if x == chosen else "#2a6fdb"
        radius = 6 if x == chosen else 3
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{colour}"><title>step {x}: '
                     f'{y:.4f}</title></circle>')
        parts.append(f'<text x="{cx:.1f}" y="{h - bottom + 16}" font-size="11" text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{hi:.3f}</text>'
                 f'<text x="{left - 6}" y="{h - bottom}" font-size="11" text-anchor="end">{lo:.3f}</text>'
                 f'<text x="{w / 2:.0f}" y="{h - 4}" font-size="12" text-anchor="middle">step</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rejected(job: StageJob, page: Path) -> list[str]:
    """Rows of the candidates picking rejected in this stage's image sets, with why."""
    rows = []
    for c, set_name in job.sets():
        work = c.work_dir(set_name)
        why, scores, threshold = read_info(work / PICKS_FILE)
        for code, cells in sorted(scores.items()):
            for cell in cells:
                ident = cell.get("identity")
                if threshold is None or ident is None or ident <= threshold:
                    continue
                pic = work / "clean" / f"{code}-{cell.get('n')}.png"
                thumb = _img(pic, page, "thumb", f"{code}-{cell.get('n')}") if pic.is_file() else "(gone)"
                rows.append(f"<tr><td>{html.escape(c.keyword)} {html.escape(set_name)}</td><td>{code} "
                            f"#{cell.get('n')}</td><td>{thumb}</td><td>{cell.get('iou', 0):.3f}</td>"
                            f'<td class="bad">{ident:.3f} &gt; {threshold:.3f}</td><td>{html.escape(why.get(code, ""))}'
                            "</td></tr>")
        for code, text in sorted(why.items()):
            if text.startswith("no pick") and not scores.get(code):
                rows.append(f"<tr><td>{html.escape(c.keyword)} {html.escape(set_name)}</td><td>{code}</td><td></td>"
                            f'<td></td><td></td><td class="bad">{html.escape(text)}</td></tr>')
    return rows


def _table(head: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="note">{empty}</p>'
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def render_report(job: StageJob) -> str:
    """The HTML of the stage's report (see the module doc)."""
    page = report_path(job)
    s = read_score(score_path(job))
    title = f"{job.out} — {job.name} stage"
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body data-broken='?'>",
           f"<h1>{html.escape(title)}</h1>",
           f"<p>LoRA <code>{html.escape(job.lora.name)}</code>; merged <code>{html.escape(job.merged.name)}</code>, "
           f"compressed <code>{html.escape(job.compressed.name)}</code>.</p>"]
    if s is None:
        out.append('<p class="note">Not scored yet: run the stage (its score step writes this page).</p>')
    else:
        out.append(f"<h2>Chosen checkpoint</h2><p>Step <b>{s.chosen}</b> (<code>{html.escape(s.file)}</code>): "
                   f"{html.escape(s.reason)}.</p>")
        points = [(x.step, x.identity) for x in s.steps if x.identity is not None]
        out.append("<h2>Identity by step</h2>" + plot_svg(points, s.chosen, s.threshold))  # type: ignore[arg-type]
        tagged = any(x.adherence is not None for x in s.steps)
        rows = [f"<tr{' class=chosen' if x.step == s.chosen else ''}><td>{x.step}</td><td>{html.escape(x.file)}</td>"
                f"<td>{'-' if x.identity is None else f'{x.identity:.4f}'}</td>"
                + (f"<td>{'-' if x.adherence is None else f'{x.adherence:.2f}'}</td>" if tagged else "") + "</tr>"
                for x in s.steps]
        heads = ("step", "file", "identity (lower = more alike)") + (("prompt adherence",) if tagged else ())
        out.append(_table(heads, rows, "No checkpoints."))
        if cost := cost_line(read_cost(cost_path(job)), [x.step for x in s.steps]):
            out.append(f"<p class='note'>Cost: {html.escape(cost)}.</p>")
        grids = {x.step: job.lora.parent / x.grid for x in s.steps if x.grid}
        last = max(x.step for x in s.steps)
        shown = [(f"Chosen step {s.chosen}", grids.get(s.chosen))]
        if last != s.chosen:
            shown.append((f"Last step {last}", grids.get(last)))
        for label, grid in shown:
            if grid is not None and grid.is_file():
                out.append(f"<h2>{html.escape(label)}: previews</h2>" + _img(grid, page, "grid", label))
        if s.dataset:
            pictures = dataset_pictures(job)
            rows = []
            for key, value in sorted(s.dataset.items()):
                pic = pictures.get(key)
                thumb = _img(pic, page, "thumb", key) if pic is not None and pic.is_file() else ""
                bad = s.threshold is not None and value > s.threshold
                rows.append(f"<tr><td>{html.escape(key)}</td><td>{thumb}</td><td{' class=bad' if bad else ''}>"
                            f"{value:.4f}</td></tr>")
            out.append("<h2>Training images: identity per code</h2>" + _table(
                ("subset/code", "image", "identity (to the dataset's medoid or the references)"), rows, ""))
    if job.preview.is_file():
        out.append("<h2>Preview grid (base, LoRA, merged, compressed)</h2>" + _img(job.preview, page, "grid", "preview"))
    out.append("<h2>Rejected candidates</h2>" + _table(
        ("set", "candidate", "picture", "IoU", "identity", "why"), _rejected(job, page),
        "None: every pick was the character (or identity was not scored)."))
    out.append("</body></html>")
    return "\n".join(out)


def write_report(job: StageJob) -> Path:
    path = report_path(job)
    atomic_write_text(path, render_report(job), fsync=False)
    return path
