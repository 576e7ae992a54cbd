"""Prompt adherence: does a picture show what its prompt asked for? A WD14 tagger (SmilingWolf's Danbooru taggers)
tags it, run exactly as the field's library runs it (dghs-imgutils' `imgutils.tagging.wd14`: its picture
preparation — padded square on white, BGR, the model's input size — and its ONNX runner), on files the user
downloaded once; charframe never downloads.

- a model NAME of `imgutils.tagging.wd14.MODEL_NAMES` (`SwinV2_v3`, `ConvNext_v3`, `EVA02_Large`, …) is looked up in
  the Hugging Face cache, where imgutils itself would find it offline: the tagger
  `deepghs/wd14_tagger_with_embeddings/<repo>/model.onnx` and its labels `<repo>/selected_tags.csv`
  (`<repo>` = e.g. `SmilingWolf/wd-swinv2-tagger-v3`);
- a FOLDER (absolute, or relative to the project) holding `model.onnx` and `selected_tags.csv` is used as it is.

Only the *general* tags count (category 0 of `selected_tags.csv`), over imgutils' default threshold 0.35.
**Adherence** of a picture (`adherence`): of the prompt's tags the tagger knows (`expected_tags`: each
comma-separated part, weights and `<lora:…>` removed, spaces as underscores; a part that is not a tag, such as the
scene "in a forest", gives its words that are: `forest`), the fraction it finds. Predictions are cached per picture
content, as CCIP features are.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from charframe.dataset.imagesize import check_pixels
from charframe.errors import CharframeError
from charframe.models.ccip import (
    cached_array, is_folder_name, memo_digest, picture_key, require_imgutils, session, store_array,
)
from charframe.prompt_syntax import BREAK, parse_attention
from charframe.util.files import user_cache_dir
from charframe.util.manifest import digest_bytes

MODEL_REPO = "deepghs/wd14_tagger_with_embeddings"
MODEL_FILE, LABEL_FILE = "model.onnx", "selected_tags.csv"
DEFAULT_MODEL = "SwinV2_v3"
GENERAL = 0  # the category of general tags in selected_tags.csv
THRESHOLD = 0.35  # imgutils' default general threshold


@dataclass(frozen=True)
class TaggerModel:
    """The two files of one WD14 tagger."""

    name: str
    model: Path
    labels: Path

    @property
    def key(self) -> str:
        """What the caches and the step records know the tagger by: both files' content."""
        return digest_bytes("\0".join(memo_digest(p) for p in (self.model, self.labels)).encode())


def _repo(name: str) -> str:
    require_imgutils()
    from imgutils.tagging.wd14 import MODEL_NAMES

    if name not in MODEL_NAMES:
        raise CharframeError(f"{name!r} is not a WD14 tagger that imgutils knows ({', '.join(MODEL_NAMES)}), nor a "
                             f"folder holding {MODEL_FILE} and {LABEL_FILE}")
    return MODEL_NAMES[name]


def download_hint(repo: str) -> str:
    return (f"download it once: huggingface-cli download {MODEL_REPO} --include \"{repo}/*\" && huggingface-cli "
            f"download {repo} {LABEL_FILE} (or put {MODEL_FILE} and {LABEL_FILE} in a folder and name that folder)")


def locate(model: str = DEFAULT_MODEL, *, root: Path | None = None, where: str = "tagger ([score] tagger)"
           ) -> TaggerModel:
    """The files of `model` (a name in the Hugging Face cache, or a folder; see the module doc). Anything missing
    is one `CharframeError` naming the file and how to get it; nothing is downloaded."""
    if is_folder_name(model):
        folder = Path(os.path.expanduser(model))
        if not folder.is_absolute() and root is not None:
            folder = root / folder
        paths = [folder / MODEL_FILE, folder / LABEL_FILE]
        for p in paths:
            if not p.is_file():
                raise CharframeError(f"{p}: the {where} file {p.name} is not there; a tagger folder holds {MODEL_FILE} "
                                     f"and {LABEL_FILE} (from {MODEL_REPO}/<repo>/ and <repo>)")
        return TaggerModel(folder.name, paths[0], paths[1])
    from huggingface_hub import constants, try_to_load_from_cache

    repo = _repo(model)
    found = []
    for repo_id, filename in ((MODEL_REPO, f"{repo}/{MODEL_FILE}"), (repo, LABEL_FILE)):
        path = try_to_load_from_cache(repo_id, filename)
        if not isinstance(path, str):
            cache = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
            raise CharframeError(f"{cache}: the {where} file {filename} is not in the Hugging Face cache; "
                                 + download_hint(repo))
        found.append(Path(path))
    return TaggerModel(model, found[0], found[1])


@functools.lru_cache(maxsize=8)
def _labels(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        names = tuple(str(r["name"]) for r in rows)
        general = tuple(i for i, r in enumerate(rows) if int(r["category"]) == GENERAL)
    except (OSError, UnicodeDecodeError, KeyError, ValueError, TypeError, csv.Error) as e:
        raise CharframeError(f"{path}: not a tagger's {LABEL_FILE} (needs name and category columns; "
                             f"{type(e).__name__}); download it again") from None
    if not general:
        raise CharframeError(f"{path}: no general tags (category {GENERAL}) in it; download {LABEL_FILE} again")
    return names, general


def labels(model: TaggerModel) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(every tag name, the indexes of the general tags)."""
    st = model.labels.stat()
    return _labels(str(model.labels), st.st_size, st.st_mtime_ns)


class Tagger:
    """General-tag probabilities of pictures, per-picture cached (see the module doc)."""

    def __init__(self, model: TaggerModel, *, cache: Path | None = None) -> None:
        self.model = model
        self.cache = (cache or user_cache_dir() / "tagger") / model.key
        self.names, self.general = labels(model)
        self.vocabulary = frozenset(self.names[i] for i in self.general)

    def predictions(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """(N, tags) probabilities, as `imgutils.tagging.get_wd14_tags` computes them (its 'prediction')."""
        out = []
        for p in paths:
            key = picture_key(p)
            pred = cached_array(self.cache, key)
            if pred is None:
                pred = self.predict(p)
                store_array(self.cache, key, pred)
            out.append(pred)
        return np.stack(out) if out else np.zeros((0, len(self.names)), np.float32)

    def predict(self, path: str | os.PathLike) -> np.ndarray:
        """One picture's probabilities (no cache)."""
        require_imgutils()
        from imgutils.tagging.wd14 import _prepare_image_for_tagging

        check_pixels(Path(path))
        sess = session(self.model.model)
        inp = sess.get_inputs()[0]
        try:
            data = _prepare_image_for_tagging(os.fspath(path), inp.shape[1])
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file
            raise CharframeError(f"{path}: not a readable picture ({type(e).__name__})") from None
        pred = sess.run([sess.get_outputs()[0].name], {inp.name: data})[0]
        if pred.shape[-1] != len(self.names):
            raise CharframeError(f"{self.model.model}: gives {pred.shape[-1]} tags, its {self.model.labels.name} lists "
                                 f"{len(self.names)}; download both files of one tagger")
        return np.asarray(pred[0], np.float32)

    def tags(self, paths: Sequence[str | os.PathLike], threshold: float = THRESHOLD) -> list[set[str]]:
        """The general tags over `threshold` of each picture."""
        preds = self.predictions(paths)
        return [{self.names[i] for i in self.general if row[i] > threshold} for row in preds]


def expected_tags(prompt: str, vocabulary: frozenset[str] | set[str]) -> set[str]:
    """The tags of `prompt` that the tagger knows (see the module doc)."""
    text = "".join("," if w == BREAK else t for t, w in parse_attention(prompt))
    out = set()
    for part in text.split(","):
        tag = "_".join(part.strip().lower().split())
        if not tag:
            continue
        if tag in vocabulary:
            out.add(tag)
        else:
            out.update(w for w in tag.split("_") if w in vocabulary)
    return out


def adherence(found: Sequence[set[str]], expected: Sequence[set[str]]) -> float | None:
    """Mean, over the pictures whose prompt has tags the tagger knows, of the fraction of them it found; None when
    no prompt has any."""
    fractions = [len(f & e) / len(e) for f, e in zip(found, expected) if e]
    return float(np.mean(fractions)) if fractions else None

