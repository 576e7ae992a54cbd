"""Background removal with rembg, offline only.

A model is a rembg model name (`isnet-anime` for anime pictures, `u2net`, …) or the path of an ONNX file with
U²-Net's signature (one RGB input 1×3×320×320, first output 1×1×320×320). Named models are looked up where
rembg keeps them (`$U2NET_HOME` or `~/.u2net`, and rembg's own `<home>/models/<name>/`); a missing file is
one error naming the file and the folder. Nothing is ever downloaded: the session classes are given the file
found here, so rembg's download step never runs. onnxruntime's telemetry (a device id written into
`~/.cache/Microsoft/`) is switched off before rembg or onnxruntime is imported (`deps.no_dependency_telemetry`).

rembg is imported only when a session is opened: `import rembg` imports pymatting, whose numba code compiles
on first use (about 1.5-2.5 minutes on a 2-core machine, then cached); looking for a model file (`method =
auto` deciding between rembg and flood) reads the folders itself, so the flood method never pays that, and a
first-time compile is announced before it starts.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charframe.deps import no_dependency_telemetry
from charframe.errors import CharframeError

log = logging.getLogger(__name__)
no_dependency_telemetry()  # before anything here imports onnxruntime

#: rembg model names charframe offers (each one ONNX file `<name>.onnx`); the first is the default
MODEL_NAMES = ("isnet-anime", "u2net", "u2netp", "isnet-general-use", "silueta", "u2net_human_seg")
DEFAULT_MODEL = "isnet-anime"
#: where to download them (for the message; charframe itself never downloads)
MODEL_URL = "https://github.com/danielgatis/rembg/releases/tag/v0.0.0"


@dataclass(frozen=True)
class RembgModel:
    name: str  # rembg session name, or "u2net_custom" for a file given by path
    path: Path


def model_home() -> Path:
    """The folder named in messages: `$U2NET_HOME`, else `~/.u2net` (rembg's classic model folder)."""
    return Path(os.path.expanduser(os.environ.get("U2NET_HOME") or "~/.u2net"))


def _model_files(name: str) -> list[Path]:
    """Where rembg (2.0.50 and later) looks for `<name>.onnx`, in its order: `<home>/models/<name>/` (home =
    `$U2NET_HOME`, else `$REMBG_HOME`, else `$XDG_DATA_HOME/rembg` or `~/.rembg`), then the old flat folder
    (`$U2NET_HOME`, else `$XDG_DATA_HOME/.u2net` or `~/.u2net`) — read here without importing rembg."""
    env = os.environ.get
    legacy = Path(os.path.expanduser(env("U2NET_HOME") or os.path.join(env("XDG_DATA_HOME") or "~", ".u2net")))
    home = legacy if env("U2NET_HOME") else Path(os.path.expanduser(
        env("REMBG_HOME") or (os.path.join(env("XDG_DATA_HOME"), "rembg") if env("XDG_DATA_HOME") else "~/.rembg")))
    return list(dict.fromkeys([home / "models" / name / f"{name}.onnx", legacy / f"{name}.onnx",
                               model_home() / f"{name}.onnx"]))


def numba_cache_present() -> bool:
    """Whether pymatting's numba code has been compiled and cached before (else importing rembg compiles it)."""
    import importlib.util

    spec = importlib.util.find_spec("pymatting")
    places = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    if os.environ.get("NUMBA_CACHE_DIR"):
        places = [Path(os.environ["NUMBA_CACHE_DIR"])]
    return any(next(p.rglob("*.nbi"), None) for p in places if p.is_dir())


def _import_rembg() -> None:
    if "rembg" not in sys.modules and not numba_cache_present():
        log.warning("first use of rembg here: its matting library (pymatting) compiles with numba once, "
                    "about 1.5-2.5 minutes on 2 cores; later runs start in about a second")
    import rembg  # noqa: F401


def _session_class(name: str) -> Any:
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    _import_rembg()
    from rembg.sessions import sessions_class

    if threads is not None and torch.get_num_threads() != threads:
        # importing rembg's sessions (after charframe's cleaning modules) raises torch's intra-op thread count to
        # the core count; restored, or every later generation or training of the process computes differently
        torch.set_num_threads(threads)

    for sc in sessions_class:
        if sc.name() == name:
            return sc
    raise CharframeError(f"rembg has no model {name!r}")  # pragma: no cover - MODEL_NAMES are rembg's


def find_model_file(name: str) -> Path | None:
    """The local file of the rembg model `name`, or None (never downloads, never imports rembg)."""
    return next((p for p in _model_files(name) if p.is_file()), None)


def resolve_model(model: str | os.PathLike | None) -> RembgModel:
    """A name from MODEL_NAMES or an ONNX file path → the local model; missing → one clear error."""
    value = os.fspath(model) if model else DEFAULT_MODEL
    if value in MODEL_NAMES:
        path = find_model_file(value)
        if path is None:
            raise CharframeError(
                f"{{param}} {value}: the model file {value}.onnx is not here: put it in {model_home()} "
                f"(download it from {MODEL_URL}; charframe never downloads models)", param="model")
        return RembgModel(value, path)
    path = Path(os.path.expanduser(value))
    if path.suffix.lower() != ".onnx" and not path.exists():
        raise CharframeError(f"{{param}} {value}: unknown rembg model; give one of {', '.join(MODEL_NAMES)} "
                             "or the path of an .onnx file", param="model")
    if not path.is_file():
        raise CharframeError(f"{{param}} {path}: no such ONNX model file", param="model")
    return RembgModel("u2net_custom", path.absolute())


def model_available(model: str | os.PathLike | None) -> bool:
    """True when `resolve_model` would succeed (for `method="auto"`)."""
    try:
        resolve_model(model)
    except CharframeError:
        return False
    return True


def open_session(model: RembgModel, threads: int | None = None) -> Any:
    """A rembg session on exactly `model.path` (rembg's classes and predict code; its download never runs)."""
    import onnxruntime as ort

    base = _session_class(model.name)
    path = str(model.path)

    class LocalSession(base):  # type: ignore[misc, valid-type]
        @classmethod
        def download_models(cls, *args: Any, **kwargs: Any) -> str:
            return path

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return LocalSession(model.name, opts, model_path=path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors are long C++ texts: keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CharframeError(f"{{param}} {path}: not a usable ONNX model ({first})", param="model") from None


def rembg_alpha(session: Any, rgb: np.ndarray) -> np.ndarray:
    """Alpha (H, W) float32 in [0, 1] from rembg's mask of `rgb` (H, W, 3 uint8)."""
    from PIL import Image

    _import_rembg()
    from rembg import remove

    mask = remove(Image.fromarray(rgb), session=session, only_mask=True)
    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
