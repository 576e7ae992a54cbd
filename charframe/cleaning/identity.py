"""Identity for picking: how far each candidate is from the character (CCIP difference, `models.ccip`).

The character is its *consensus*: the `reference = ["ref1.png", …]` pictures of the character file when it names
some (a candidate's identity is then its mean difference to them), else the medoid of the set's own candidates
(the one whose summed difference to all others is smallest: with most candidates on-model, an on-model one).
Candidates are scored as the dataset will hold them (the cleaned, filled pictures in `clean/`).

Which model: `[identity]` of charframe.toml (`models.ccip`: "auto" uses the default CCIP model when its files are
in the Hugging Face cache, and scores no identity otherwise — picking is then by pose alone, as before).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charframe.character import Character
from charframe.errors import CharframeError
from charframe.models import ccip
from charframe.project import load_project

log = logging.getLogger(__name__)

AUTO, NONE = "auto", "none"


@dataclass(frozen=True)
class IdentitySetting:
    """What `[identity]` resolves to here: the model (None: identity is not scored) and why."""

    model: ccip.CcipModel | None
    label: str  # "none", "auto: no model", or the model's name

    def params(self) -> dict[str, Any]:
        """For the step records: which model (its files are step inputs) and the threshold."""
        if self.model is None:
            return {"identity": self.label}
        return {"identity": self.model.name, "threshold": self.model.threshold}

    def files(self) -> list[Path]:
        m = self.model
        return [] if m is None else [m.feature, m.metric, m.info]


def identity_setting(root: Path) -> IdentitySetting:
    """The project's identity model; an explicitly named model that is missing is one error naming the file."""
    table = load_project(root).identity
    threshold = table.threshold or None
    choice = table.model.strip() or AUTO
    if choice.lower() == NONE:
        return IdentitySetting(None, NONE)
    if choice.lower() == AUTO:
        if not ccip.available(ccip.DEFAULT_MODEL, root):
            return IdentitySetting(None, "auto: no model")
        if importlib.util.find_spec("imgutils") is None:
            return IdentitySetting(None, f"auto: {ccip.PACKAGE} not installed")
        return IdentitySetting(ccip.locate(ccip.DEFAULT_MODEL, root=root, threshold=threshold), ccip.DEFAULT_MODEL)
    model = ccip.locate(choice, root=root, threshold=threshold, where="identity model ([identity] model)")
    return IdentitySetting(model, model.name)


def scorer_for(root: Path) -> ccip.Scorer | None:
    """A scorer on the project's identity model, or None when identity is not scored."""
    setting = identity_setting(root)
    if setting.model is None:
        return None
    ccip.require_imgutils()
    return ccip.Scorer(setting.model)


def reference_files(character: Character) -> list[Path]:
    """The character file's reference pictures, as paths (checked to exist when the file was read)."""
    out = []
    for ref in character.reference:
        p = character.resolve(ref)
        if p is None or not p.is_file():
            raise CharframeError(f"{character.path}: reference: {ref!r}: no such picture ({p})")
        out.append(p)
    return out


def identities(scorer: ccip.Scorer, pictures: list[Path], references: list[Path]) -> tuple[np.ndarray, str]:
    """Per picture, its CCIP difference to the consensus (see the module doc), and what the consensus was."""
    if not pictures:
        return np.zeros(0, np.float32), "nothing to score"
    feats = scorer.features(pictures)
    if references:
        return scorer.differences(feats, scorer.features(references)).mean(axis=1), \
            f"{len(references)} reference picture(s)"
    square = scorer.differences(feats)
    m = ccip.medoid(square)
    return square[:, m], f"the set's medoid {pictures[m].name}"
