"""Read and write kohya-format LoRA files, keeping their metadata honest.

Writing is atomic (a temp file renamed over the target) and stamps the two hashes that
sd-scripts pre-computes for the AdditionalNetworks/WebUI extension, because every tool in the
chain may have changed the tensors:

- `sshs_model_hash`: SHA-256 of the tensor data region of the file (everything after the header);
- `sshs_legacy_hash`: first 8 hex digits of SHA-256 of the 64 KiB at offset 1 MiB of the file as
  it would be serialised with only the `ss_*` metadata keys.

Both are computed from the written file in one streaming pass (no second in-memory copy of a
300 MB file) and written into the header in place, which is possible because the placeholders
have the same length as the final hex digests. `.ckpt`/`.pt` inputs are opened only with
`torch.load(weights_only=True)`, which never runs pickled code.

Reading has one path for every command (`TensorFile`): the safetensors header is checked against
the file's real size before anything is allocated, so a damaged, random or lying file gives one
line naming it, never a MemoryError.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import mmap
import os
from pathlib import Path
from typing import Any

import torch

from charframe import __version__
from charframe.errors import CharframeError
from charframe.lora.file_family import network_family
from charframe.lora.format import FileModule, LoraNetwork, group_modules, validate_module, validate_shapes, validate_values
from charframe.models.checkpoint import PICKLE_SUFFIXES, read_pickle
from charframe.models.embeddings import split_bundle
from charframe.util.files import atomic_path
from charframe.util.workers import torch_threads

MODEL_HASH_KEY = "sshs_model_hash"
LEGACY_HASH_KEY = "sshs_legacy_hash"
HISTORY_KEY = "charframe_history"
_LEGACY_OFFSET, _LEGACY_SIZE = 0x100000, 0x10000
#: Largest header accepted (the safetensors library's own limit): real LoRA headers are ~100 KiB.
MAX_HEADER_BYTES = 100 * 2**20
#: Words of torch's weights-only refusals that mean "this pickle would run or import code".

def check_input_file(path: Path) -> None:
    """A readable file, not a folder: say which it is."""
    if path.is_dir():
        raise CharframeError(f"{path}: is a folder; give a LoRA file (.safetensors)")
    if not path.is_file():
        raise CharframeError(f"{path}: no such file")


def load_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a `.safetensors` (or weights-only `.ckpt`/`.pt`) file."""
    path = Path(path)
    check_input_file(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tf = TensorFile(path)
        return tf.read_all(), tf.metadata
    if suffix in PICKLE_SUFFIXES:
        return read_pickle(path), {}
    raise CharframeError(f"{path}: unsupported file type '{suffix}'; use .safetensors (or .ckpt/.pt)")


def save_lora_file(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None
) -> Path:
    """Write `tensors` (stored contiguous, on CPU) + `metadata` atomically with fresh sshs hashes."""
    from safetensors.torch import save_file

    path = Path(path)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    md = {str(k): str(v) for k, v in (metadata or {}).items()}
    md[MODEL_HASH_KEY] = "0" * 64
    md[LEGACY_HASH_KEY] = "0" * 8
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), md)
        _stamp_hashes(tmp, flat, md)
    return path


def lora_file_hashes(path: str | os.PathLike) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) of an existing safetensors file, as sd-scripts defines them."""
    with open(path, "rb") as f:
        try:
            header, data_start = _read_header(f)
        except ValueError as e:
            raise CharframeError(f"{path}: not a readable safetensors file ({e})") from None
        return _hashes(f, header, data_start)


def _read_header(f) -> tuple[dict, int]:
    """(header dict, data offset) of an open safetensors file; ValueError when it cannot be one."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{size} bytes, shorter than a safetensors header")
    n = int.from_bytes(head, "little")
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise ValueError(f"its header claims {n} bytes, the file has {size}")
    header = json.loads(f.read(n))  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return header, 8 + n


def _hashes(f, header: dict, data_start: int, tensors=None) -> tuple[str, str]:
    """Stream the data region once: full SHA-256, and the legacy 64 KiB window on the way."""
    ss_start = 8 + _ss_header_length(header)
    window_start = _LEGACY_OFFSET - ss_start  # legacy window, as an offset into the data region
    if window_start < 0:  # header of the ss-only file reaches past 1 MiB: take the plain route
        legacy = _legacy_in_memory(tensors if tensors is not None else _reload(f), header)
        window_start = None
    full, window = hashlib.sha256(), bytearray()
    f.seek(data_start)
    pos = 0
    while chunk := f.read(1 << 20):
        full.update(chunk)
        if window_start is not None and len(window) < _LEGACY_SIZE and pos + len(chunk) > window_start:
            lo = max(0, window_start - pos)
            window += chunk[lo : lo + _LEGACY_SIZE - len(window)]
        pos += len(chunk)
    if window_start is not None:
        legacy = hashlib.sha256(bytes(window)).hexdigest()[:8]
    return full.hexdigest(), legacy


def _ss_metadata(header: dict) -> dict[str, str]:
    return {k: v for k, v in header.get("__metadata__", {}).items() if k.startswith("ss_")}


def _ss_header_length(header: dict) -> int:
    """Header length of the same tensors serialised with only the `ss_*` metadata (sd-scripts' rule)."""
    h = {"__metadata__": _ss_metadata(header)}
    h.update((k, v) for k, v in header.items() if k != "__metadata__")
    raw = len(json.dumps(h, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return raw + (-raw % 8 if _header_is_padded() else 0)


@functools.lru_cache(maxsize=1)
def _header_is_padded() -> bool:
    """Whether the installed safetensors pads headers to 8 bytes (newer versions do)."""
    from safetensors.torch import save

    for name in ("a", "ab", "abc", "abcd"):
        blob = save({name: torch.zeros(1)}, {})
        raw = len(json.dumps({"__metadata__": {}, name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                             separators=(",", ":")))
        if raw % 8:
            return int.from_bytes(blob[:8], "little") != raw
    return True


def _legacy_in_memory(tensors: dict[str, torch.Tensor], header: dict) -> str:
    from safetensors.torch import save

    blob = save(tensors, _ss_metadata(header))
    return hashlib.sha256(blob[_LEGACY_OFFSET : _LEGACY_OFFSET + _LEGACY_SIZE]).hexdigest()[:8]


def _reload(f) -> dict[str, torch.Tensor]:
    tensors, _ = load_lora_file(f.name)
    return tensors


def _stamp_hashes(tmp: Path, tensors: dict[str, torch.Tensor], md: dict[str, str]) -> None:
    """Replace the all-zero hash placeholders in the written header by the real digests, in place."""
    with open(tmp, "r+b") as f:
        header, data_start = _read_header(f)
        model_hash, legacy_hash = _hashes(f, header, data_start, tensors)
        f.seek(8)
        head = f.read(data_start - 8)
        for key, value in ((MODEL_HASH_KEY, model_hash), (LEGACY_HASH_KEY, legacy_hash)):
            placeholder = json.dumps({key: md[key]}, separators=(",", ":"))[1:-1].encode()
            at = head.find(placeholder)
            if at < 0 or head.find(placeholder, at + 1) >= 0:
                raise RuntimeError(f"cannot locate the {key} placeholder in {tmp}")
            f.seek(8 + at + len(placeholder) - len(value) - 1)
            f.write(value.encode())
        f.flush()
        os.fsync(f.fileno())


_DTYPES = {
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


class TensorFile:
    """A safetensors file read tensor by tensor, straight into fresh tensors (thread-safe).

    The one reader of every command. The header is checked entry by entry (known dtype, shape and
    byte range agree, data inside the file) before any tensor is allocated; streaming then keeps
    peak memory near one module plus the output, instead of the whole input.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                header, self.data_start = _read_header(f)
                size = os.fstat(f.fileno()).st_size
            self.metadata = _metadata(header.pop("__metadata__", None))
            self.entries = {k: _entry(k, v, size - self.data_start) for k, v in header.items()}
        except (ValueError, OSError) as e:
            raise CharframeError(f"{path}: not a readable safetensors file ({e})") from None

    def meta(self) -> dict[str, torch.Tensor]:
        return {k: torch.empty(shape, dtype=dtype, device="meta") for k, (dtype, shape, _, _) in self.entries.items()}

    def tensor(self, key: str) -> torch.Tensor:
        with open(self.path, "rb") as f:  # own handle per call: safe from worker threads, any OS
            return self._read(f, key)

    def read_all(self) -> dict[str, torch.Tensor]:
        """Every tensor, in file order: views of a private copy-on-write map of the file, so nothing
        is copied until written (as safetensors' own loader does); an unaligned tensor is read."""
        out = {}
        with open(self.path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            for key, (dtype, shape, start, end) in self.entries.items():
                at = self.data_start + start
                if end > start and at % torch.empty((), dtype=dtype).element_size() == 0:
                    out[key] = torch.frombuffer(mm, dtype=dtype, count=math.prod(shape), offset=at).reshape(shape)
                else:
                    out[key] = self._read(f, key)
        return out

    def _read(self, f, key: str) -> torch.Tensor:
        dtype, shape, start, end = self.entries[key]
        out = torch.empty(shape, dtype=dtype)
        view = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(bytearray())
        f.seek(self.data_start + start)
        if f.readinto(view) != end - start:
            raise CharframeError(f"{self.path}: file ended early while reading {key}")
        return out


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("__metadata__ must map text to text")
    return dict(raw)


def _entry(key: str, v: Any, data_size: int) -> tuple[torch.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, start, end) of one header entry, checked against the data region's size."""
    try:
        dtype, shape, (start, end) = _DTYPES[v["dtype"]], tuple(v["shape"]), v["data_offsets"]
    except KeyError as e:
        what = f"dtype {v['dtype']!r} is not one charframe reads" if isinstance(v, dict) and "dtype" in v else f"no {e}"
        raise ValueError(f"tensor {key!r}: {what}") from None
    except (TypeError, ValueError):
        raise ValueError(f"tensor {key!r}: malformed entry {str(v)[:80]}") from None
    ints = all(isinstance(x, int) and x >= 0 for x in (*shape, start, end))
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size() if ints else -1
    if not ints or end - start != nbytes or end > data_size:
        raise ValueError(f"tensor {key!r}: shape {list(shape)} does not fit bytes {start}..{end} of {data_size} (truncated?)")
    return dtype, shape, start, end


def read_network(path: str | os.PathLike, lazy: bool = False) -> LoraNetwork:
    """Load, group and check a LoRA file (errors name the file and the first bad key or module); bundled
    embeddings (`bundle_emb.…`) are kept aside in `net.bundle` and written back unchanged.

    `lazy=True` (safetensors) reads just the header now: shapes are checked at once, each module's
    data is read and checked when `net.materialize(module)` asks for it. Both read through
    `TensorFile`, so every command refuses a damaged file with the same message.
    """
    path = Path(path)
    check_input_file(path)
    if lazy and path.suffix.lower() == ".safetensors":
        tf = TensorFile(path)
        bundle, meta = split_bundle(tf.meta())
        bundle = {k: tf.tensor(k) for k in bundle}  # embeddings are small: read now
        modules = group_modules(meta, path)
        for module in modules.values():
            validate_shapes(module, path)

        def load(module: FileModule) -> FileModule:
            real = FileModule(module.name, module.kind, {k: tf.tensor(f"{module.name}.{k}") for k in module.tensors},
                              module.conv1x1)
            validate_values(real, path)
            return real

        return with_family(LoraNetwork(modules=modules, metadata=tf.metadata, source=path, loader=load, bundle=bundle))

    tensors, metadata = load_lora_file(path)
    bundle, tensors = split_bundle(tensors)
    modules = group_modules(tensors, path)
    with torch_threads(1):  # one reduction per tensor: threads only add contention
        for module in modules.values():
            validate_module(module, path)
    return with_family(LoraNetwork(modules=modules, metadata=metadata, source=path, bundle=bundle))


def with_family(net: LoraNetwork) -> LoraNetwork:
    """The network with its family (`file_family.network_family`) noted, and the family's 1x1-conv layer names on
    every module (so a flat LoHa update gets its layer's shape)."""
    fam = network_family(net)
    net.family = fam.id if fam is not None else None
    for module in net.modules.values():
        module.conv1x1 = fam.conv1x1 if fam is not None else None
    return net


def write_network(path: str | os.PathLike, net: LoraNetwork) -> Path:
    """Save a network (tensors in module order) through `save_lora_file`."""
    return save_lora_file(path, net.state_dict(), net.metadata)


def with_history(metadata: dict[str, str], op: str, **details: Any) -> dict[str, str]:
    """Copy of `metadata` with one more entry in the `charframe_history` JSON list (provenance)."""

    try:
        history = json.loads(metadata.get(HISTORY_KEY, "[]"))
        if not isinstance(history, list):
            history = [history]
    except json.JSONDecodeError:
        history = [metadata[HISTORY_KEY]]
    entry = {"op": op, "charframe": __version__, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    entry.update(details)
    history.append(entry)
    out = dict(metadata)
    out[HISTORY_KEY] = json.dumps(history, ensure_ascii=False)
    return out


def tensors_nbytes(net: LoraNetwork) -> int:
    return sum(m.nbytes() for m in net.modules.values())
