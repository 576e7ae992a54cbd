"""`pick`: one candidate per code, by hand or by pose fidelity.

Automatic picking scores each cleaned candidate against its template: the IoU of the candidate's silhouette
(alpha > 0.5) with the template's exact mask (`<Face|Body>Template/control/mask/<code>.png`, resized to the
candidate), ties broken by edge agreement (cosine similarity of the candidate's edge strength with the
template's soft-edge map). Azimuths 5-7 of an asymmetric character use the mirrored masks of 3, 2, 1 when no
own file is there. Hand picks (`f12:2`, or a selection file `f12 = 2`) override the automatic ones.
Writes `picks.toml` and `contact-picked.png` (elevation rows × azimuth columns: template, candidates and their
scores, the pick outlined with the reason it won; `draw_picked_sheet` redraws it after a hand edit).

Identity (`cleaning.identity`, when an identity model is set up): every candidate also gets its CCIP difference to
the character (the reference pictures, or the set's medoid). A candidate over the threshold is rejected whatever
its IoU: the pick is the best pose among the candidates that are the character. A code with no such candidate has
no pick (it is left out of the dataset and reported; `cleaning.retry` first makes new candidates for it). Why each
code got its pick, and every candidate's scores, are written to `picks.toml` (`[why]`, `[scores]`).

Hand picks are pinned: `picks.toml` has a `[pinned]` table (picks made by hand, kept by every later pick, whatever
the scores say) and an `[auto]` table (what scoring chose). Editing a number in `[auto]` pins that code at the
next pick (the pipeline runs pick again when the file was edited); deleting a line from `[pinned]` lets charframe
choose again. A file charframe did not write (or an older flat `f12 = 2` file edited by hand) counts as pinned
throughout, the safe side; it is kept as `picks.toml.bak` before it is rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from charframe.character import Character
from charframe.cleaning.identity import identities, reference_files, scorer_for
from charframe.cleaning.images import candidates, read_image
from charframe.dataset.naming import parse_code
from charframe.dataset.sheets import Cell, SheetLayout, Tile, draw_sheet
from charframe.errors import CharframeError
from charframe.project import project_dirs
from charframe.util import toml as tomlio
from charframe.util.files import atomic_write_bytes, atomic_write_text, backup_file
from charframe.util.manifest import Manifest, Status
from charframe.util.schema import read_text_file

log = logging.getLogger(__name__)

PICKS_FILE = "picks.toml"
CONTACT_FILE = "contact-picked.png"
PICK_MANIFEST = ".charframe-pick.json"
#: IoUs closer than this count as a tie (then the edge score decides)
IOU_TIE = 0.005


@dataclass(frozen=True)
class Score:
    code: str
    candidate: int
    iou: float
    edge: float
    identity: float | None = None  # CCIP difference to the character (lower = more alike); None = not scored


@dataclass
class PickOutcome:
    """What one pick decided: the picks, the codes left without one (no candidate is the character), why each
    code got its pick, every candidate's scores, and the identity threshold used (None: not scored)."""

    picks: dict[str, int]
    rejected: list[str]
    why: dict[str, str]
    scores: list[Score]
    threshold: float | None = None


def score_lines(s: Score) -> tuple[tuple[str, float], ...]:
    """What a sheet prints under a candidate: (label, value) pairs, in the order they decide."""
    lines = (("IoU", s.iou), ("edge", s.edge))
    return lines + ((("identity", s.identity),) if s.identity is not None else ())


def template_dir(character: Character, code: str) -> Path:
    """`<FaceTemplate|BodyTemplate>/control` of the project (`[paths]` of charframe.toml honoured)."""
    dirs = project_dirs(character.root)
    return (dirs.face_templates if code[0] == "f" else dirs.body_templates) / "control"


def _template_file(folder: Path, code: str, channels: int) -> np.ndarray | None:
    """`folder/<code>.png`, or for azimuths 5-7 without their own file the mirror of 3-1; None when neither."""
    own = folder / f"{code}.png"
    c = parse_code(code)
    if not own.is_file() and c is not None and c.azimuth >= 5:
        source = folder / f"{c.kind}{c.elevation}{8 - c.azimuth}.png"
        if source.is_file():
            return np.ascontiguousarray(read_image(source, channels)[:, ::-1])
    return read_image(own, channels) if own.is_file() else None


def template_map(character: Character, code: str, kind: str) -> np.ndarray:
    """The template's `mask` or `softedge` map of `code` (grey uint8); 5-7 mirror 3-1 when not rendered."""
    folder = template_dir(character, code) / kind
    found = _template_file(folder, code, 1)
    if found is None:
        c = parse_code(code)
        which = " with azimuths 0-7" if c and c.azimuth >= 5 else ""
        raise CharframeError(f"{folder / f'{code}.png'}: the template has no {kind} map; render the templates{which} "
                             "(charframe templates) or draw one")
    return found


def edge_strength(grey: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, float32, slightly blurred (so near-misses still agree)."""
    g = grey.astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    return cv2.GaussianBlur(mag, (0, 0), 1.5)


def score_candidate(rgba: np.ndarray, mask: np.ndarray, softedge: np.ndarray) -> tuple[float, float]:
    """(IoU with the template mask, edge agreement with its soft-edge map) of one RGBA candidate."""
    h, w = rgba.shape[:2]
    sil = rgba[..., 3] > 127
    tm = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA) > 127
    union = (sil | tm).sum()
    iou = float((sil & tm).sum() / union) if union else 0.0
    cand = edge_strength(cv2.cvtColor(rgba[..., :3], cv2.COLOR_RGB2GRAY)).ravel()
    ref = cv2.GaussianBlur(cv2.resize(softedge, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32),
                           (0, 0), 1.5).ravel()
    norm = float(np.linalg.norm(cand) * np.linalg.norm(ref))
    return iou, float(cand @ ref / norm) if norm else 0.0


def score_set(character: Character, set_name: str, codes: list[str] | None = None,
              identity: dict[tuple[str, int], float] | None = None) -> list[Score]:
    """Scores of every cleaned candidate (of `codes`, default all), with their identity when given."""
    alpha = character.work_dir(set_name) / "alpha"
    found = _cleaned(character, set_name)
    identity = identity or {}
    scores = []
    for code in codes if codes is not None else list(found):
        mask = template_map(character, code, "mask")
        edge = template_map(character, code, "softedge")
        for i in found[code]:
            iou, e = score_candidate(read_image(alpha / f"{code}-{i}.png", 4), mask, edge)
            scores.append(Score(code, i, iou, e, identity.get((code, i))))
    return scores


def identity_scores(character: Character, set_name: str, found: dict[str, list[int]], scorer: Any
                    ) -> tuple[dict[tuple[str, int], float], str]:
    """{(code, candidate): CCIP difference to the character} of every cleaned candidate, and the consensus used."""
    clean = character.work_dir(set_name) / "clean"
    keys = [(code, i) for code, ix in found.items() for i in ix]
    values, consensus = identities(scorer, [clean / f"{code}-{i}.png" for code, i in keys], reference_files(character))
    return {k: float(v) for k, v in zip(keys, values)}, consensus


def best(scores: list[Score], threshold: float | None = None) -> dict[str, int]:
    """Per code the highest IoU among the candidates within the identity threshold (all, without identity); IoUs
    within IOU_TIE of the best are decided by the edge score. A code with no candidate within it gets no pick."""
    return decide(scores, threshold)[0]


def _accepted(s: Score, threshold: float | None) -> bool:
    return threshold is None or s.identity is None or s.identity <= threshold


def decide(scores: list[Score], threshold: float | None = None) -> tuple[dict[str, int], dict[str, str]]:
    """(picks, why): see `best`; `why` says in a line why each code got its pick, or why it has none."""
    picks: dict[str, int] = {}
    why: dict[str, str] = {}
    for code in dict.fromkeys(s.code for s in scores):
        mine = [s for s in scores if s.code == code]
        ok = [s for s in mine if _accepted(s, threshold)]
        if not ok:
            closest = min(mine, key=lambda s: s.identity)  # type: ignore[arg-type, return-value]
            why[code] = (f"no pick: all {len(mine)} candidates differ from the character (identity over "
                         f"{threshold:.3f}; closest #{closest.candidate} at {closest.identity:.3f})")
            continue
        top = max(s.iou for s in ok)
        tied = [s for s in ok if s.iou >= top - IOU_TIE]
        won = max(tied, key=lambda s: (s.edge, -s.candidate))
        picks[code] = won.candidate
        text = f"#{won.candidate}: best IoU {won.iou:.3f}" if len(tied) == 1 else \
            f"#{won.candidate}: IoU {won.iou:.3f} ties {len(tied) - 1} other(s) within {IOU_TIE}, best edge {won.edge:.3f}"
        if won.identity is not None:
            text += f"; identity {won.identity:.3f} within {threshold:.3f}"
        beaten = [s for s in mine if not _accepted(s, threshold) and s.iou > won.iou]
        if beaten:
            text += "; rejected despite a better IoU: " + ", ".join(
                f"#{s.candidate} (IoU {s.iou:.3f}, identity {s.identity:.3f})" for s in beaten)
        why[code] = text
    return picks, why


def parse_manual(items: list[str]) -> dict[str, int]:
    """`["f12:2", "b03:1"]` and/or selection files (`*.toml` holding `f12 = 2`) → {code: candidate}."""
    picks: dict[str, int] = {}
    for item in items:
        if item.lower().endswith(".toml"):
            picks.update(read_selection(Path(item)))
            continue
        code, sep, index = item.partition(":")
        if not sep or parse_code(code) is None or code != parse_code(code).code or not index.isdigit():
            raise CharframeError(f"bad pick {item!r}: write CODE:CANDIDATE like f12:2 (or give a selection .toml)")
        picks[code] = int(index)
    return picks


PICK_TABLES = ("pinned", "auto")
#: tables of picks.toml that only inform (why each pick won, every candidate's scores): never picks
INFO_TABLES = ("why", "scores")


def _selection_tables(path: Path, text: str) -> dict[str, dict[str, int]]:
    """{"pinned": …, "auto": …} of a picks/selection file; a flat file (`f12 = 2` lines) is one table "flat"."""
    try:
        data = tomlio.loads(text)
    except tomlio.TOMLDecodeError as e:
        raise CharframeError(f"{path}: not valid TOML ({e})") from None
    tables = {k: data.pop(k) for k in PICK_TABLES if isinstance(data.get(k), dict)}
    for k in INFO_TABLES:
        if isinstance(data.get(k), dict):
            del data[k]
    if data:
        tables["flat"] = data
    out: dict[str, dict[str, int]] = {}
    for table, entries in tables.items():
        out[table] = {}
        for key, value in entries.items():
            code = parse_code(key)
            if code is None or code.code != key or not isinstance(value, int) or isinstance(value, bool) or value < 0:
                where = f"[{table}] " if table != "flat" else ""
                raise CharframeError(f"{path}: {where}{key} = {value!r}: each line must be CODE = CANDIDATE, like f12 = 2")
            out[table][key] = value
    return out


def read_selection(path: Path) -> dict[str, int]:
    """A selection file: `f12 = 2` lines, or picks.toml's `[pinned]` and `[auto]` tables (pinned wins)."""
    tables = _selection_tables(path, read_text_file(path, "selection file"))
    return {**tables.get("auto", {}), **tables.get("flat", {}), **tables.get("pinned", {})}


def _cleaned(character: Character, set_name: str) -> dict[str, list[int]]:
    folder = character.work_dir(set_name) / "alpha"
    found = candidates(folder)
    if not found:
        raise CharframeError(f"{folder}: no cleaned candidates; run charframe clean first")
    return found


def check_manual(manual: dict[str, int], found: dict[str, list[int]], where: Path) -> None:
    for code, i in manual.items():
        if code not in found:
            raise CharframeError(f"pick {code}:{i}: no candidates of {code} in {where} (codes: {', '.join(found)})")
        if i not in found[code]:
            raise CharframeError(f"pick {code}:{i}: {code} has candidates {', '.join(map(str, found[code]))}, not {i}")


def format_table(scores: list[Score], picks: dict[str, int], manual: dict[str, int],
                 threshold: float | None = None) -> str:
    ident = threshold is not None
    lines = [f"{'code':<5} {'cand':>4} {'IoU':>6} {'edge':>6}" + (f" {'ident':>6}" if ident else "") + "  picked"]
    for s in scores:
        mark = ("by hand" if s.code in manual else "auto") if picks.get(s.code) == s.candidate else ""
        if ident and s.identity is not None and s.identity > threshold:
            mark = mark or "rejected: not the character"
        extra = f" {s.identity:>6.3f}" if ident and s.identity is not None else (f" {'-':>6}" if ident else "")
        lines.append(f"{s.code:<5} {s.candidate:>4} {s.iou:>6.3f} {s.edge:>6.3f}{extra}  {mark}")
    for code in manual:
        if not any(s.code == code for s in scores):
            lines.append(f"{code:<5} {manual[code]:>4} {'-':>6} {'-':>6}" + (f" {'-':>6}" if ident else "") + "  by hand")
    return "\n".join(lines)


def sheet_reason(code: str, scores: list[Score], hand: bool, threshold: float | None = None) -> str:
    """Why the pick of `code` won, in a few words for the sheet (`decide` writes the long form)."""
    if hand:
        return "picked by hand"
    mine = [s for s in scores if s.code == code]
    ok = [s for s in mine if _accepted(s, threshold)]
    if not ok:
        return "picked"
    top = max(s.iou for s in ok)
    text = "IoU tie → best edge" if sum(s.iou >= top - IOU_TIE for s in ok) > 1 else "best IoU"
    return text + " of the character" if len(ok) < len(mine) else text


def _scores_for_sheet(character: Character, set_name: str, codes: list[str], known: list[Score]
                      ) -> tuple[list[Score], float | None]:
    """`known` plus the scores of the other codes whose templates have the maps (hand-picked codes are shown
    with their scores too; a code without maps just has none); identities not in `known` come from picks.toml's
    `[scores]` (what the last pick measured), with its threshold."""
    have = {s.code for s in known}
    out = list(known)
    for code in codes:
        if code not in have:
            try:
                out += score_set(character, set_name, [code])
            except CharframeError:
                pass
    _, recorded, threshold = read_info(character.work_dir(set_name) / PICKS_FILE)
    identity = {(code, int(c["n"])): float(c["identity"]) for code, cells in recorded.items() for c in cells
                if isinstance(c, dict) and isinstance(c.get("n"), int) and isinstance(c.get("identity"), (int, float))}
    out = [s if s.identity is not None else replace(s, identity=identity.get((s.code, s.candidate))) for s in out]
    return out, (float(threshold) if isinstance(threshold, (int, float)) else None)


def draw_picked_sheet(character: Character, set_name: str, *, manual: set[str] | None = None,
                      scores: list[Score] | None = None, threshold: float | None = None) -> SheetLayout:
    """Draw `contact-picked.png` from the set's picks.toml and the candidates' scores, and return its layout.

    Hand picks are the codes in `manual`; without it, picks.toml's pinned picks and the lines edited by hand since
    charframe wrote it (`hand_picks`). Call it again after picks.toml changed. With identity scores, a candidate
    over the threshold is marked "not the character"."""
    work = character.work_dir(set_name)
    found = _cleaned(character, set_name)
    picks = read_picks(character, set_name)
    scores, recorded = _scores_for_sheet(character, set_name, list(found), scores or [])
    threshold = threshold if threshold is not None else recorded
    auto = best(scores, threshold)
    hand = set(manual) if manual is not None else set(hand_picks(work))
    cells = []
    for code, indices in found.items():
        folder = template_dir(character, code).parent
        tiles = [Tile(_template_file(folder, code, 3), "template", missing="no template")]
        by_index = {s.candidate: s for s in scores if s.code == code}
        for i in indices:
            chosen = picks.get(code) == i
            mark = ("hand" if code in hand else "pick") if chosen else ""
            lines = score_lines(by_index[i]) if i in by_index else ()
            note = (sheet_reason(code, scores, code in hand, threshold) if chosen else
                    "the scores' pick" if auto.get(code) == i else
                    "not the character" if i in by_index and not _accepted(by_index[i], threshold) else "")
            tiles.append(Tile(work / "clean" / f"{code}-{i}.png", f"#{i}", lines, mark, note))
        cells.append(Cell(code, tuple(tiles)))
    n_hand = sum(c in hand for c in picks)
    title = f"{character.keyword} {set_name}: picks for {len(picks)} of {len(found)} codes ({n_hand} by hand)"
    identity = (f" Only candidates within the identity threshold {threshold:.3f} (CCIP difference to the character) "
                "can be chosen." if threshold is not None else "")
    legend = (f"green: chosen by the scores (highest IoU of the silhouette with the template mask; IoUs within "
              f"{IOU_TIE} decided by the edge agreement with the soft-edge map).{identity} orange: picked by hand in "
              f"{PICKS_FILE}. Edit {PICKS_FILE} (code = candidate) to change a pick.")
    layout = draw_sheet(title, cells, legend=legend, kind=next(iter(found))[0])
    atomic_write_bytes(work / CONTACT_FILE, layout.png())
    return layout


def picks_toml(auto: dict[str, int], pinned: dict[str, int], why: dict[str, str] | None = None,
               scores: list[Score] | None = None, threshold: float | None = None) -> str:
    head = ("# charframe pick: one candidate per code (contact-picked.png shows them all).\n"
            "# Change a number to pick by hand: the code is pinned and every later pick keeps it.\n"
            "# Delete a line from [pinned] to let charframe choose that code again.\n")
    lines = lambda picks: "".join(f"{code} = {i}\n" for code, i in sorted(picks.items()))  # noqa: E731
    info = ""
    if why:
        reasons = [code + " = " + tomlio.value(text.replace("\n", " ")) + "\n" for code, text in sorted(why.items())]
        info += "[why]\n" + "".join(reasons) + "\n"
    if scores:
        info += ("[scores]  # per candidate: IoU and edge agreement with the template (higher = closer pose), "
                 "identity = CCIP difference to the character (lower = more alike)\n")
        if threshold is not None:
            info += f"threshold = {threshold:.4f}\n"
        for code in dict.fromkeys(s.code for s in scores):
            cells = ", ".join("{" + f"n = {s.candidate}, iou = {s.iou:.4f}, edge = {s.edge:.4f}"
                              + (f", identity = {s.identity:.4f}" if s.identity is not None else "") + "}"
                              for s in scores if s.code == code)
            info += f"{code} = [{cells}]\n"
        info += "\n"
    return f"{head}{info}[pinned]\n{lines(pinned)}\n[auto]\n{lines(auto)}"


def hand_picks(work: Path) -> dict[str, int]:
    """The pinned picks of a set: the `[pinned]` table, and every other line edited by hand since charframe wrote
    it (every line of a file charframe did not write)."""
    path = work / PICKS_FILE
    if not path.is_file():
        return {}
    tables = _selection_tables(path, read_text_file(path, "picks file"))
    pinned = tables.get("pinned", {})
    others = {**tables.get("flat", {}), **tables.get("auto", {})}
    manifest = Manifest.load(work / PICK_MANIFEST)
    status = manifest.status(PICKS_FILE)
    written = (manifest.outputs.get(PICKS_FILE) or {}).get("auto")
    if written is None and status is not Status.UP_TO_DATE:  # not charframe's file: every line is the user's
        return {**others, **pinned}
    if status is Status.FOREIGN:  # edited since charframe wrote it: the lines that differ are hand picks
        return {**{c: i for c, i in others.items() if (written or {}).get(c) != i}, **pinned}
    return pinned


def save_picks(work: Path, auto: dict[str, int], pinned: dict[str, int], why: dict[str, str] | None = None,
               scores: list[Score] | None = None, threshold: float | None = None) -> Path:
    """Write picks.toml; a copy edited by hand since charframe wrote it is kept as picks.toml.bak first."""
    manifest = Manifest.load(work / PICK_MANIFEST)
    if manifest.status(PICKS_FILE) is Status.FOREIGN:
        log.info("%s: edited by hand; hand picks pinned, the file kept as %s", work / PICKS_FILE,
                 backup_file(work / PICKS_FILE).name)
    text = picks_toml(auto, pinned, why, scores, threshold)
    st = atomic_write_text(work / PICKS_FILE, text)
    manifest.record(PICKS_FILE, data=text.encode("utf-8"), stat=st)
    manifest.outputs[PICKS_FILE]["auto"] = dict(sorted(auto.items()))
    manifest.dirty = True
    manifest.save()
    return work / PICKS_FILE


def pick_set(character: Character, set_name: str, *, manual: dict[str, int] | list[str] | None = None,
             unpin: list[str] | None = None, scorer: Any = "auto") -> dict[str, int]:
    """Pick one candidate per code: pinned hand picks first (those in picks.toml, then `manual`, which pins too;
    `unpin` releases codes, "all" every one), the rest by pose fidelity among the candidates that are the character
    (identity, when scored). Write picks.toml and the marked contact sheet; return {code: candidate}."""
    return pick_outcome(character, set_name, manual=manual, unpin=unpin, scorer=scorer).picks


def pick_outcome(character: Character, set_name: str, *, manual: dict[str, int] | list[str] | None = None,
                 unpin: list[str] | None = None, scorer: Any = "auto", notes: dict[str, str] | None = None
                 ) -> PickOutcome:
    """`pick_set`, returning everything it decided (`PickOutcome`). `scorer`: a `models.ccip.Scorer`, None (no
    identity), or "auto" (the project's `[identity]`). `notes`: more words per code for `[why]` (retries)."""
    work = character.work_dir(set_name)
    found = _cleaned(character, set_name)
    manual = parse_manual(manual) if isinstance(manual, list) else dict(manual or {})
    check_manual(manual, found, work / "alpha")
    pinned = hand_picks(work)
    released = set(pinned) if unpin and "all" in unpin else set(unpin or ())
    pinned = {c: i for c, i in pinned.items() if c not in released}
    for code, i in list(pinned.items()):
        if i not in found.get(code, ()):
            log.warning("%s: pinned pick %s = %d has no cleaned candidate any more; %s is picked automatically",
                        work / PICKS_FILE, code, i, code)
            del pinned[code]
    pinned |= manual
    auto_codes = [code for code in found if code not in pinned]
    if scorer == "auto":
        scorer = scorer_for(character.root)
    identity, threshold = {}, None
    if scorer is not None and auto_codes:
        identity, consensus = identity_scores(character, set_name, found, scorer)
        threshold = scorer.threshold
        log.info("%s: identity against %s (threshold %.3f)", work, consensus, threshold)
    scores = score_set(character, set_name, auto_codes, identity)
    auto, why = decide(scores, threshold)
    why |= {code: "pinned by hand" for code in pinned}
    for code, note in (notes or {}).items():
        if code in why:
            why[code] += f"; {note}"
    picks = {code: {**auto, **pinned}[code] for code in found if code in auto or code in pinned}
    rejected = [code for code in auto_codes if code not in auto]
    log.info("%s", format_table(scores, picks, pinned, threshold))
    save_picks(work, {c: i for c, i in auto.items() if c in picks}, {c: i for c, i in pinned.items() if c in picks},
               why, scores, threshold)
    draw_picked_sheet(character, set_name, manual=set(pinned), scores=scores, threshold=threshold)
    log.info("%s: %d picked (%d pinned by hand) → %s", work, len(picks), len(pinned), work / PICKS_FILE)
    for code in rejected:
        log.warning("%s %s: %s", work, code, why[code])
    return PickOutcome(picks, rejected, why, scores, threshold)


def read_info(path: Path) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], float | None]:
    """(why, scores per code, identity threshold) of a picks.toml (empty when it has none or is unreadable)."""
    try:
        data = tomlio.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomlio.TOMLDecodeError):
        return {}, {}, None
    scores = dict(data.get("scores") or {})
    threshold = scores.pop("threshold", None)
    return dict(data.get("why") or {}), {k: v for k, v in scores.items() if isinstance(v, list)}, threshold


def read_picks(character: Character, set_name: str) -> dict[str, int]:
    """The set's picks.toml; missing → an error saying to pick first."""
    path = character.work_dir(set_name) / PICKS_FILE
    if not path.is_file():
        raise CharframeError(f"{path}: no picks yet; run charframe pick {character.keyword} first")
    return read_selection(path)
