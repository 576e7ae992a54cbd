"""Character identity: CCIP (deepghs' anime character-similarity model) through the field's library, dghs-imgutils.

CCIP is two ONNX models and a JSON file, published as `deepghs/ccip_onnx` (`<model>/model_feat.onnx`: a picture →
a 768-d feature; `<model>/model_metrics.onnx`: N features → the N×N "difference" matrix; `<model>/metrics.json`:
its `threshold`, below which two pictures show the same character — 0.1785 for the default
`ccip-caformer-24-randaug-pruned`). charframe scores exactly as `imgutils.metrics.ccip` does — the same picture
loading (`imgutils.data.load_images`: RGB, transparency over white), the same preprocessing (384 px bilinear,
CLIP mean/std) and the same ONNX runner (`imgutils.utils.open_onnx_model`) — but it never downloads: the files are
looked up where the user put them, once:

- a model NAME (`ccip-caformer-24-randaug-pruned`) is looked up in the Hugging Face cache (`HF_HUB_CACHE`,
  default `~/.cache/huggingface/hub`), where `huggingface-cli download deepghs/ccip_onnx --include
  "ccip-caformer-24-randaug-pruned/*"` puts it, with `huggingface_hub.try_to_load_from_cache` (no request is
  made, `HF_HUB_OFFLINE` or not); it is the same file `imgutils` itself would load offline;
- a FOLDER (absolute, or relative to the project) holding the three files is used as it is.

A missing file is one line naming it and the command that fetches it; a file that is not an ONNX model (or a
metrics.json without a threshold) is one line naming the file. Features are cached per picture content
(`<charframe cache>/ccip/<model digest>/<picture digest>.npy`), so a rerun scores nothing it scored before.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from charframe.dataset.imagesize import check_pixels
from charframe.deps import no_dependency_telemetry
from charframe.errors import CharframeError
from charframe.util.files import atomic_write_bytes, user_cache_dir
from charframe.util.manifest import digest_bytes, digest_file

no_dependency_telemetry()  # before anything here imports onnxruntime

log = logging.getLogger(__name__)

REPO = "deepghs/ccip_onnx"
DEFAULT_MODEL = "ccip-caformer-24-randaug-pruned"
FEATURE_FILE, METRIC_FILE, INFO_FILE = "model_feat.onnx", "model_metrics.onnx", "metrics.json"
FILES = (FEATURE_FILE, METRIC_FILE, INFO_FILE)
SIZE = 384  # CCIP's input size (imgutils' default)
BATCH = 16
#: the pip package that provides `imgutils`
PACKAGE = "dghs-imgutils"
PACKAGE_VERSION = "0.19.0"  # the version whose preprocessing the tests compare with


@dataclass(frozen=True)
class CcipModel:
    """The three files of one CCIP model and its "same character" threshold (metrics.json, or the user's)."""

    name: str
    feature: Path
    metric: Path
    info: Path
    threshold: float

    @property
    def key(self) -> str:
        """What the feature cache and the step records know the model by: its feature model's content."""
        return _file_digest(str(self.feature), *_stat(self.feature))


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return digest_file(path)


def download_hint(name: str) -> str:
    return (f"download it once: huggingface-cli download {REPO} --include \"{name}/*\" (or put {', '.join(FILES)} "
            f"in a folder and name that folder)")


def is_folder_name(model: str) -> bool:
    """A model given as a folder (a path), not as a CCIP model name."""
    return any(sep in model for sep in ("/", "\\")) or model.startswith(".") or Path(model).is_absolute()


def locate(model: str = DEFAULT_MODEL, *, root: Path | None = None, threshold: float | None = None,
           where: str = "identity model") -> CcipModel:
    """The files of `model` (a CCIP model name in the Hugging Face cache, or a folder; see the module doc).

    `threshold`: the user's "same character" limit (None: metrics.json's). Nothing is downloaded; anything missing
    or unreadable is one `CharframeError` naming the file."""
    if is_folder_name(model):
        folder = Path(os.path.expanduser(model))
        if not folder.is_absolute() and root is not None:
            folder = root / folder
        paths = {f: folder / f for f in FILES}
        for f, p in paths.items():
            if not p.is_file():
                raise CharframeError(f"{p}: the {where} file {f} is not there; a CCIP model folder holds "
                                     f"{', '.join(FILES)} (from {REPO}/<model>/)")
        name = folder.name
    else:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub import constants

        paths = {}
        for f in FILES:
            found = try_to_load_from_cache(REPO, f"{model}/{f}")
            if not isinstance(found, str):
                cache = Path(constants.HF_HUB_CACHE) / ("models--" + REPO.replace("/", "--"))
                raise CharframeError(f"{cache}: the {where} file {model}/{f} is not in the Hugging Face cache; "
                                     + download_hint(model))
            paths[f] = Path(found)
        name = model
    limit = _threshold(paths[INFO_FILE]) if threshold is None else float(threshold)
    return CcipModel(name, paths[FEATURE_FILE], paths[METRIC_FILE], paths[INFO_FILE], limit)


def _threshold(path: Path) -> float:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["threshold"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10:
            raise ValueError(value)
        return float(value)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CharframeError(f"{path}: not a CCIP metrics.json (needs a number \"threshold\"; {type(e).__name__}); "
                             "download the model's files again") from None


def available(model: str = DEFAULT_MODEL, root: Path | None = None) -> bool:
    """Whether `model`'s files are all there (no message, nothing loaded)."""
    try:
        locate(model, root=root, threshold=1.0)
    except CharframeError:
        return False
    return True


def require_imgutils() -> None:
    """dghs-imgutils is importable, else one line saying which package to install."""
    try:
        import imgutils.metrics.ccip  # noqa: F401
    except ImportError as e:
        raise CharframeError(f"identity scoring needs the {PACKAGE} package (imgutils), which is not installed "
                             f"({e}); install it: pip install 'charframe[identity]' && pip install --no-deps "
                             f"{PACKAGE}=={PACKAGE_VERSION} (bin/install.sh does both)") from None


@functools.lru_cache(maxsize=8)
def _session(path: str, size: int, mtime_ns: int) -> Any:
    """An ONNX session on `path` through imgutils' opener (its provider choice: CUDA when present, `ONNX_MODE`)."""
    require_imgutils()
    from imgutils.utils import open_onnx_model

    try:
        return open_onnx_model(path)
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are long C++ texts: keep the first line
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CharframeError(f"{path}: not a usable ONNX model ({first}); download the model's files again") from None


def session(path: Path) -> Any:
    return _session(str(path), *_stat(path))


def load_picture(path: str | os.PathLike) -> Any:
    """The picture as imgutils loads it for CCIP (RGB, transparency composed over white); a file that is not a
    picture is one line naming it."""
    require_imgutils()
    from imgutils.data import load_image

    path = Path(path)
    check_pixels(path)  # a lying or huge header is refused before the decoder allocates for it
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CharframeError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        image = load_image(io.BytesIO(data), mode="RGB")
        image.load()
        return image
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file
        raise CharframeError(f"{path}: not a readable picture ({type(e).__name__}); replace it with a PNG or JPEG "
                             "of the character") from None


def preprocess(images: Sequence[Any], size: int = SIZE) -> np.ndarray:
    """(N, 3, size, size) float32: imgutils' own CCIP preprocessing of each loaded picture."""
    from imgutils.metrics.ccip import _preprocess_image

    return np.stack([_preprocess_image(im, size=size) for im in images]).astype(np.float32)


class Scorer:
    """Features and differences of one CCIP model, with the per-picture feature cache (see the module doc)."""

    def __init__(self, model: CcipModel, *, cache: Path | None = None, size: int = SIZE) -> None:
        self.model, self.size = model, size
        self.cache = (cache or user_cache_dir() / "ccip") / f"{model.key}-{size}"
        self.computed = 0  # features computed by this scorer (the rest came from the cache)

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def features(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """(N, D) features of the pictures at `paths` (cached per picture content)."""
        keys = [picture_key(p) for p in paths]
        out: list[np.ndarray | None] = [cached_array(self.cache, k) for k in keys]
        todo = [i for i, f in enumerate(out) if f is None]
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            feats = self.extract([load_picture(paths[i]) for i in chunk])
            for i, f in zip(chunk, feats):
                out[i] = f
                store_array(self.cache, keys[i], f)
        self.computed += len(todo)
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]

    def extract(self, images: Sequence[Any]) -> np.ndarray:
        """(N, D) features of loaded pictures (no cache): `imgutils.metrics.ccip.ccip_batch_extract_features`'s
        computation on this model's file."""
        data = preprocess(images, self.size)
        output, = session(self.model.feature).run(["output"], {"input": data})
        return np.asarray(output, np.float32)

    def differences(self, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """(len(a), len(b)) CCIP differences (b = a: the square matrix), from the metric model as imgutils'
        `ccip_batch_differences` runs it."""
        stacked = a if b is None else np.concatenate([a, b])
        if len(stacked) == 0:
            return np.zeros((len(a), 0 if b is None else len(b)), np.float32)
        output, = session(self.model.metric).run(["output"], {"input": stacked.astype(np.float32)})
        m = np.asarray(output, np.float32)
        return m if b is None else m[: len(a), len(a):]


# --- per-picture caches (features here, tagger predictions in models.tagger) ------------------------------------

def memo_digest(path: Path) -> str:
    """A file's content digest, memoised by path, size and mtime."""
    return _file_digest(str(path), *_stat(path))


def picture_key(path: str | os.PathLike) -> str:
    """A picture's cache key: its content digest (memoised by size and mtime)."""
    try:
        return _file_digest(os.fspath(path), *_stat(Path(path)))
    except OSError as e:
        raise CharframeError(f"{path}: cannot read ({e.strerror or e})") from None


def cached_array(folder: Path, key: str) -> np.ndarray | None:
    try:
        return np.load(folder / f"{key}.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None


def store_array(folder: Path, key: str, value: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value, np.float32), allow_pickle=False)
    try:
        atomic_write_bytes(folder / f"{key}.npy", buf.getvalue(), fsync=False)
    except OSError as e:  # a cache that cannot be written costs time, never the result
        log.debug("cache %s not written: %s", folder, e)


def medoid(differences: np.ndarray) -> int:
    """The index whose summed difference to all others is smallest (ties: the first): the set's consensus."""
    return int(np.argmin(differences.sum(axis=1)))


def model_digest(model: CcipModel) -> str:
    """The model as a step parameter: its three files' content and the threshold."""
    parts = [model.key, _file_digest(str(model.metric), *_stat(model.metric)),
             _file_digest(str(model.info), *_stat(model.info)), repr(model.threshold)]
    return digest_bytes("\0".join(parts).encode())
