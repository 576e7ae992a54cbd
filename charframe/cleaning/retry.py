"""Pick with retries: a code none of whose candidates is the character gets new candidates, then is reported.

After a pick (`cleaning.pick`, pose and identity), each code left without a pick — every candidate over the
identity threshold — gets `[generation] candidates` new candidates with the next seeds (`generation.generate_set`
with `first` = the next free number: seeds `seed + 4 …` for four candidates a round), cleaned like the others, and
the set is picked again; up to `[generation] retries` rounds. A code still without a pick is left out of the
dataset and reported (a warning and its `[why]` line in picks.toml, with the rounds tried); pin a candidate by hand
to use one anyway. The new candidates are the generate step's own (recorded by it: a later generate keeps them
while its inputs are unchanged), so nothing is made twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from charframe.character import Character
from charframe.cleaning.clean import clean_set
from charframe.cleaning.export import set_kind
from charframe.cleaning.identity import scorer_for
from charframe.cleaning.images import candidates
from charframe.cleaning.pick import PickOutcome, pick_outcome
from charframe.generation.generate import generate_set

log = logging.getLogger(__name__)


def rounds_done(indices: list[int], n: int) -> int:
    """How many retry rounds a code's candidate numbers show (candidates 0…n-1 are round 0)."""
    return max(0, (max(indices) + 1 + n - 1) // n - 1) if indices else 0


def pick_with_retries(character: Character, set_name: str, *, face_lora: str | Path | None = None,
                      progress: bool = True, scorer: Any = "auto", retries: int | None = None) -> PickOutcome:
    """Pick the set; regenerate codes without an acceptable candidate (see the module doc)."""
    kind, outfit = set_kind(character, set_name)
    n = character.generation.candidates
    limit = character.generation.retries if retries is None else retries
    if scorer == "auto":  # found once, for every round
        scorer = scorer_for(character.root)
    outcome = pick_outcome(character, set_name, scorer=scorer)
    while outcome.rejected:
        found = candidates(character.work_dir(set_name) / "raw")
        rounds = {code: rounds_done(found.get(code, []), n) for code in outcome.rejected}
        todo = {code: r + 1 for code, r in rounds.items() if r < limit}
        if not todo:
            break
        for next_round in sorted(set(todo.values())):
            codes = [code for code, r in todo.items() if r == next_round]
            log.info("%s: %s: no candidate is the character; %d new candidate(s) each (retry %d of %d)",
                     character.work_dir(set_name), ", ".join(codes), n, next_round, limit)
            generate_set(character, kind, outfit=outfit, codes=codes, candidates=n, first=n * next_round,
                         face_lora=face_lora if kind == "b" else None, progress=progress)
        clean_set(character, set_name, progress=progress)
        notes = {code: f"after {r} retr{'y' if r == 1 else 'ies'}" for code, r in todo.items()}
        outcome = pick_outcome(character, set_name, scorer=scorer, notes=notes)
    if outcome.rejected:
        found = candidates(character.work_dir(set_name) / "raw")
        for code in outcome.rejected:
            log.warning("%s %s: left out of the dataset: no candidate is the character after %d retr%s (%d candidates);"
                        " pin one by hand (charframe pick %s %s:N) to use it anyway", character.keyword, code,
                        rounds_done(found.get(code, []), n), "y" if limit == 1 else "ies", len(found.get(code, [])),
                        character.keyword, code)
    return outcome
