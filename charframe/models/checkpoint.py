"""Reading checkpoint files safely: `.safetensors`, and `.ckpt`/`.pt`/`.pth`/`.bin` through torch's
weights-only unpickler (a pickle that would run code is refused, never executed). Also the file hashes
sd-scripts writes into a LoRA's metadata.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable

from charframe.errors import CharframeError

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}

CONVERT_HINT = (
    "if you trust the file, convert it to .safetensors (e.g. with a checkpoint converter in WebUI or "
    "ComfyUI, or kohya's tools) and pass the .safetensors file instead"
)


def read_state_dict(path: Path) -> dict[str, Any]:
    """All tensors of a checkpoint file, unwrapping the `state_dict` container old `.ckpt` files use."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CharframeError(f"{path}: not a readable .safetensors file ({exc})") from exc
    if suffix in PICKLE_SUFFIXES:
        return read_pickle(path)
    raise CharframeError(
        f"{path}: unknown model file type {suffix!r}; pass a .safetensors (preferred) or .ckpt file, "
        "or a diffusers folder"
    )


# Training-state objects that old Lightning `.ckpt` files carry next to the weights. They are replaced
# by empty placeholder classes of ours, so the weights-only unpickler accepts them without running
# (or even importing) anything from the file.
HARMLESS_CLASSES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
)


def _placeholder(qualified: str) -> type:
    module, name = qualified.rsplit(".", 1)
    return type(name, (), {"__module__": module, "__setstate__": lambda self, state: None})


def _allowed_globals() -> list[Any]:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in (np.int32, np.int64, np.float32, np.float64)]
    return [_placeholder(q) for q in HARMLESS_CLASSES] + [core.multiarray.scalar, np.dtype, *dtypes]


#: words (lower case) of torch's weights-only refusals of a pickle that would import or run code, not of damage;
#: torch's wording changes between versions ("Unsupported global: GLOBAL x", "unsupported GLOBAL os.system
#: whose module os is blocked", "unrecognized function", "allowlisted via add_safe_globals"), so it is matched
#: loosely and in one place: `pickle_refusal`
UNSAFE_PICKLE = ("unsupported global", "unsupported class", "unrecognized function", "is blocked", "safe_globals")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def pickle_refusal(exc: BaseException) -> tuple[bool, str]:
    """(unsafe, detail) of a failed weights-only `torch.load`: unsafe = the pickle would import or run code (so
    it is refused, never "corrupt"); detail = torch's one telling line, without its long preamble."""
    text = _ANSI.sub("", str(exc))  # torch colours parts of its message for terminals
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unsafe = [line for line in lines if any(w in line.lower() for w in UNSAFE_PICKLE)]
    if unsafe:
        return True, unsafe[0][:200]
    return False, (lines[0] if lines else type(exc).__name__)[:160]


def read_pickle(path: Path) -> dict[str, Any]:
    """A torch pickle (.ckpt/.pt) loaded with `weights_only=True`: the name → tensor mapping inside,
    `state_dict` containers unwrapped. Shared by model and LoRA loading: no pickled code ever runs."""
    return _unwrap(path, load_pickle(path))


def load_pickle(path: Path) -> Any:
    """The object inside a torch pickle, loaded with `weights_only=True` (tensors, dicts, lists, numbers,
    text): no pickled code ever runs; a pickle that would is refused in one line. For files whose layout is
    not a flat weight dictionary (textual-inversion embeddings)."""
    import torch

    with torch.serialization.safe_globals(_allowed_globals()):
        try:
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # old (non-zip) torch serialization cannot be memory-mapped
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the weights-only unpickler fails in many ways on garbage
            unsafe, detail = pickle_refusal(exc)
            if unsafe:
                raise CharframeError(_refusal(path, detail)) from None
            raise CharframeError(f"{path}: {_corrupt(detail)}") from None
    return obj


def _corrupt(detail: str) -> str:
    """A damaged file is called damaged: "unsafe" is only for a pickle that would import or run code."""
    return f"corrupt, truncated or not a PyTorch checkpoint ({detail}); re-download or re-save it"


def _refusal(path: Path, detail: str) -> str:
    return (
        f"{path}: unsafe: the pickle would import or run code, which torch's weights-only loader refuses ({detail}). "
        f"charframe never runs pickled code from model files; {CONVERT_HINT}"
    )


def _unwrap(path: Path, obj: Any) -> dict[str, Any]:
    import torch

    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CharframeError(f"{path}: holds a {type(obj).__name__}, not a dictionary of weights")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CharframeError(f"{path}: holds no weight tensors")
    return tensors


def shapes_and_reader(path: Path) -> tuple[dict[str, tuple[int, ...]], Callable[[], dict[str, Any]]]:
    """Key → shape map and a function that reads the tensors; a pickle is read once, not twice."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return key_shapes(path), lambda: read_state_dict(path)
    state = read_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}, lambda: state


def key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape without reading tensor data (safetensors header); pickles are read (memory-mapped)."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise CharframeError(f"{path}: not a readable .safetensors file ({exc})") from exc
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


def model_file_hashes(path: Path) -> tuple[str, str]:
    """(legacy, sha256) the way sd-scripts records `ss_sd_model_hash` / `ss_new_sd_model_hash`.

    legacy = first 8 hex digits of sha256 over the 64 KiB at offset 1 MiB (WebUI's old model hash);
    sha256 = the whole file (WebUI's new hash). A folder gives sd-scripts' placeholder "IsADirectory".
    """
    if path.is_dir():
        return "IsADirectory", "IsADirectory"
    with open(path, "rb") as f:
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
        f.seek(0)
        full = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            full.update(chunk)
    return legacy, full.hexdigest()


def file_identity(path: Path, role: str) -> dict[str, str]:
    """Name and sd-scripts style hashes of a model (`role` "sd_model") or VAE (`role` "vae") file."""
    prefix = "ss_sd_model" if role == "sd_model" else "ss_vae"
    legacy, sha = model_file_hashes(path)
    out = {f"{prefix}_name": path.name, f"{prefix}_hash": legacy, f"ss_new_{prefix.removeprefix('ss_')}_hash": sha}
    if role == "sd_model":
        out["model_name"] = path.name
        out["model_path"] = str(path)
    else:
        out["vae_path"] = str(path)
    return out
