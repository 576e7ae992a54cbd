"""Textual-inversion embeddings as AUTOMATIC1111's WebUI uses them: files, bundles inside LoRA files, the lookup
of a name in a prompt's tokens, and the hook that puts their vectors into CLIP's input.

Files (`embeddings/` of the project, `[paths] embeddings` in charframe.toml; sub-folders included): `.safetensors`,
`.pt` and `.bin` (pickles read by torch's weights-only loader, so a file carrying code is refused, never run).
Layouts, as WebUI's `create_embedding_from_data` tells them apart:
- `{"string_to_param": {"*": (n, width)}}` — WebUI's own `.pt` (exactly one entry);
- one tensor under any key — `emb_params` (sd-scripts), `{token: tensor}` (diffusers' `learned_embeds`; a
  single vector (width,) counts as one vector), a flattened `string_to_param.*`;
- `clip_l` + `clip_g` — an SDXL embedding: refused on SD1.x, naming the file.
A LoRA file, a file holding several tensors, a width the model's text encoder does not take, more than 75
vectors or a NaN: one line naming the file, and nothing is loaded. The name is the file name without its
extension (`EasyNegative.safetensors` → `EasyNegative`).

Bundles: a LoRA file may carry embeddings as `bundle_emb.<name>.string_to_param.*` (one key per embedding),
which WebUI's Lora extension registers when the LoRA is used (its key grouping: `bundle_emb` up to the first
dot, the name up to the next; of the `string_to_param.*` keys of one name only the last survives, so one key
per embedding is the only layout every reader agrees on). A name never holds a dot.

Lookup: each name is tokenized like a prompt (lower case, CLIP's BPE); at each token of a prompt fragment the
longest name whose token ids start there wins, and it then occupies as many positions as it has vectors
(`generation.prompt.chunk_tokens` places them, moving a name that would cross the 75-token chunk end into the
next chunk as WebUI does). The vectors replace the token embeddings — before CLIP adds position embeddings —
at those positions (`vectors_at`), which is WebUI's `EmbeddingsWithFixes`; emphasis weights then apply to the
CLIP output at those positions like at any other token.

The same lookup puts a trigger embedding into training captions (`substitute`, pivotal tuning).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from charframe.errors import CharframeError
from charframe.models.checkpoint import load_pickle
from charframe.util.files import atomic_path

log = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundle_emb."
BUNDLE_PARAM = "string_to_param.*"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
MAX_VECTORS = 75  # one CLIP chunk: WebUI cannot place a longer embedding
#: What an embedding name may hold: WebUI splits bundle keys at dots, and its infotext drops ':' and ','.
NAME = re.compile(r"[^\s.:,<>()\[\]\\]+")
#: Key words that mark a LoRA (or other network) file, so it is named as one instead of "not an embedding".
_LORA_MARKS = ("lora_down", "lora_up", "lora_A", "lora_B", "hada_w1", "lokr_w1", "lora_unet_", "lora_te_",
               "lora_te1_", "lora_te2_", "oft_", "diff_b")
_HASH_LENGTH = 12  # WebUI's `Embedding.shorthash`: the first 12 hex digits of the file's sha256


@dataclass(frozen=True, eq=False)
class Embedding:
    """One embedding: its name (the word that calls it), vectors (n, width) and where it came from.

    `shorthash` is what WebUI writes after the name in `TI hashes`: the file's sha256 cut to 12 hex digits, or,
    for an embedding bundled in a LoRA, the LoRA's name (WebUI's `BundledTIHash`). While pivotal tuning trains it,
    `vectors` is the trainable parameter itself."""

    name: str
    vectors: Any
    source: str
    shorthash: str = ""

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])


def check_name(name: str, what: str = "embedding name") -> str:
    """A name WebUI can call and bundle: no dot, whitespace, ':', ',' or prompt brackets."""
    if not NAME.fullmatch(name or ""):
        raise CharframeError(f"{what} {name!r} cannot name an embedding: use letters, digits, '_' or '-' "
                             "(no dots, spaces, ':' or ',')")
    return name


def _looks_like_lora(keys: Iterable[str]) -> str | None:
    return next((k for k in keys if k.startswith(BUNDLE_PREFIX) or any(m in k for m in _LORA_MARKS)), None)


def _vectors(value: Any, where: str) -> Any:
    """(n, width) float32 of a layout's tensor: a single vector counts as one, NaN/Inf and n > 75 refused."""
    import torch

    if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2) or value.numel() == 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CharframeError(f"{where}: not an embedding (its tensor is {shape}; an embedding is (vectors, width))")
    vec = value.detach().to("cpu", torch.float32).reshape(-1, value.shape[-1]).clone()
    if vec.shape[0] > MAX_VECTORS:
        raise CharframeError(f"{where}: {vec.shape[0]} vectors; WebUI places at most {MAX_VECTORS} (one 75-token "
                             "chunk) and so does charframe")
    if not bool(torch.isfinite(vec).all()):
        raise CharframeError(f"{where}: holds NaN or infinite values; re-download or re-train it")
    return vec


def embedding_vectors(data: Any, where: str) -> Any:
    """The (n, width) vectors of an embedding file's contents, told apart as WebUI does (see the module doc)."""
    import torch

    if not isinstance(data, dict) or not data:
        raise CharframeError(f"{where}: not an embedding file (it holds {type(data).__name__ if data is not None else 'nothing'})")
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, dict) or len(params) != 1:
            n = len(params) if isinstance(params, dict) else 0
            raise CharframeError(f"{where}: string_to_param holds {n} entries; an embedding file holds one")
        return _vectors(next(iter(params.values())), where)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if "clip_l" in tensors and "clip_g" in tensors:
        raise CharframeError(f"{where}: an SDXL embedding (clip_l + clip_g); this model is SD1.x, which takes "
                             "SD1.x embeddings only")
    lora = _looks_like_lora(str(k) for k in data)
    if lora is not None:
        raise CharframeError(f"{where}: a LoRA file (key {lora!r}), not an embedding; put it with the LoRA "
                             "files, not in the embeddings folder")
    if len(data) != 1 or not tensors:
        raise CharframeError(f"{where}: holds {len(data)} entries (e.g. {next(iter(data))!r}); an embedding file "
                             "holds one tensor (string_to_param, emb_params or {token: tensor})")
    return _vectors(next(iter(tensors.values())), where)


def read_embedding_data(path: Path) -> dict[str, Any]:
    """The contents of an embedding file: safetensors as a flat dict, pickles through the weights-only loader."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise CharframeError(f"{path}: no such embedding file")
    if path.stat().st_size == 0:
        raise CharframeError(f"{path}: empty file; re-download the embedding or remove it")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CharframeError(f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0][:120]})") from None
    if suffix in (".pt", ".bin"):
        return load_pickle(path)
    raise CharframeError(f"{path}: not an embedding file type; use {', '.join(EMBEDDING_SUFFIXES)}")


def file_shorthash(path: Path) -> str:
    """WebUI's TI hash of a file: sha256 of the whole file, first 12 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:_HASH_LENGTH]


def read_embedding(path: str | os.PathLike, name: str | None = None) -> Embedding:
    """One embedding file, checked (see the module doc); its name is the file name without the extension."""
    path = Path(path)
    vec = embedding_vectors(read_embedding_data(path), str(path))
    return Embedding(name or path.stem, vec, str(path), file_shorthash(path))


# --- bundles inside LoRA files -----------------------------------------------------------------------------

def bundle_key(name: str) -> str:
    """The one LoRA-file key of an embedding: `bundle_emb.<name>.string_to_param.*`."""
    return f"{BUNDLE_PREFIX}{check_name(name)}.{BUNDLE_PARAM}"


def bundle_tensors(embeddings: Iterable[Embedding], dtype: Any = None) -> dict[str, Any]:
    """`{bundle key: vectors}` of embeddings to store in a LoRA file (float32 unless `dtype`)."""
    import torch

    return {bundle_key(e.name): e.vectors.detach().to("cpu", dtype or torch.float32).contiguous() for e in embeddings}


def split_bundle(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bundle keys, every other key) of a LoRA file's tensors."""
    bundle = {k: v for k, v in tensors.items() if k.startswith(BUNDLE_PREFIX)}
    return bundle, {k: v for k, v in tensors.items() if not k.startswith(BUNDLE_PREFIX)}


def bundle_groups(keys: Iterable[str]) -> dict[str, dict[str, str]]:
    """WebUI's grouping of bundle keys: name → {entry: key}; `string_to_param.<k>` keys of a name overwrite each
    other (the last one wins), any other rest is an entry of its own (`clip_l`, `emb_params`)."""
    groups: dict[str, dict[str, str]] = {}
    for key in keys:
        first, _, rest = key.partition(".")
        if first != BUNDLE_PREFIX[:-1] or "." not in rest:
            continue
        name, entry = rest.split(".", 1)
        if entry.split(".")[0] == "string_to_param":
            entry = "string_to_param"
        groups.setdefault(name, {})[entry] = key
    return groups


def bundled_embeddings(tensors: dict[str, Any], source: str, lora_name: str) -> list[Embedding]:
    """The embeddings bundled in a LoRA's tensors, grouped and told apart as WebUI does; each one's TI hash is
    the LoRA's name (`lora_name`, as a `<lora:name:w>` tag calls it)."""
    out = []
    for name, entries in bundle_groups(tensors).items():
        where = f"{source}: bundled embedding {name!r}"
        if "string_to_param" in entries:
            data: dict[str, Any] = {"string_to_param": {"*": tensors[entries["string_to_param"]]}}
        else:
            data = {entry: tensors[key] for entry, key in entries.items()}
        out.append(Embedding(name, embedding_vectors(data, where), f"{source}/{name}", lora_name))
    return out


def read_bundle(path: str | os.PathLike) -> list[Embedding]:
    """The embeddings bundled in a LoRA file (none for a plain LoRA); only the bundle keys are read."""
    path = Path(path)
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith(BUNDLE_PREFIX)}
        except (SafetensorError, OSError) as exc:
            raise CharframeError(f"{path}: not a readable .safetensors file ({exc})") from None
    else:
        data = load_pickle(path)
        tensors = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith(BUNDLE_PREFIX)} \
            if isinstance(data, dict) else {}
    return bundled_embeddings(tensors, str(path), path.stem)


def write_embedding(path: str | os.PathLike, embedding: Embedding, metadata: dict[str, str] | None = None) -> Path:
    """A standalone embedding file `{name: vectors}` (safetensors, float32): WebUI reads it by its file name,
    diffusers' `load_textual_inversion` takes the token from the key."""
    from safetensors.torch import save_file

    path = Path(path)
    md = {"name": embedding.name, "vectors": str(embedding.count), **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file({embedding.name: embedding.vectors.detach().to("cpu").float().contiguous()}, str(tmp), md)
    return path


# --- checks against a model --------------------------------------------------------------------------------

def token_width(text_encoder: Any) -> int:
    """The width of the text encoder's token embeddings (768 for SD1.x)."""
    return int(text_encoder.get_input_embeddings().weight.shape[-1])


def check_widths(embeddings: Iterable[Embedding], width: int) -> None:
    """Every embedding fits the model's text encoder, or one line naming the first that does not."""
    for e in embeddings:
        if e.width != width:
            hint = {1024: " (an SD2.x embedding?)", 1280: " (an SDXL embedding?)", 768: " (an SD1.x embedding)"}
            raise CharframeError(f"{e.source}: vectors of width {e.width}{hint.get(e.width, '')}; this model's text "
                                 f"encoder takes {width}: use embeddings made for this base model")


# --- lookup --------------------------------------------------------------------------------------------------

class EmbeddingSet:
    """Embeddings by name, found in token ids as WebUI's `EmbeddingDatabase` finds them (longest name first)."""

    def __init__(self, tokenizer: Any, embeddings: Iterable[Embedding] = ()) -> None:
        self.tokenizer = tokenizer
        self.by_name: dict[str, Embedding] = {}
        self._by_first: dict[int, list[tuple[tuple[int, ...], Embedding]]] = {}
        for e in embeddings:
            self.add(e)

    def add(self, embedding: Embedding) -> None:
        """Register (or replace, by name) an embedding."""
        ids = tuple(self.tokenizer([embedding.name], truncation=False, add_special_tokens=False)["input_ids"][0])
        if not ids:
            return
        if embedding.name in self.by_name:
            old = self.by_name[embedding.name]
            for key, lookup in self._by_first.items():
                self._by_first[key] = [(i, e) for i, e in lookup if e is not old]
        self.by_name[embedding.name] = embedding
        lookup = self._by_first.get(ids[0], []) + [(ids, embedding)]
        self._by_first[ids[0]] = sorted(lookup, key=lambda x: len(x[0]), reverse=True)

    def find(self, ids: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """(embedding, how many of `ids` its name spans) of the longest name starting at `position`, or None."""
        for name_ids, embedding in self._by_first.get(ids[position], ()):
            if tuple(ids[position : position + len(name_ids)]) == name_ids:
                return embedding, len(name_ids)
        return None

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def __iter__(self) -> Iterator[Embedding]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)


def substitute(ids: Sequence[int], embeddings: EmbeddingSet | None,
               placeholder: int = 0) -> tuple[list[int], list[tuple[int, Embedding]]]:
    """`ids` with every embedding name replaced by one placeholder per vector, and (position, embedding) of each
    (training captions: no chunk rules, sd-scripts cuts the caption at its token limit afterwards)."""
    if not embeddings:
        return list(ids), []
    out: list[int] = []
    fixes: list[tuple[int, Embedding]] = []
    i = 0
    while i < len(ids):
        found = embeddings.find(ids, i)
        if found is None:
            out.append(ids[i])
            i += 1
            continue
        embedding, span = found
        fixes.append((len(out), embedding))
        out += [placeholder] * embedding.count
        i += span
    return out, fixes


# --- the project's folder ------------------------------------------------------------------------------------

def folder_index(folder: str | os.PathLike | None) -> dict[str, Path]:
    """name → file of every embedding file under `folder` (sub-folders too, symlinks followed, as WebUI walks
    it; empty files skipped). The first of two files with one name (sorted by path) wins, with a warning."""
    index: dict[str, Path] = {}
    if folder is None or not Path(folder).is_dir():
        return index
    found = []
    for root, _, files in os.walk(folder, followlinks=True):
        found += [Path(root) / f for f in files if Path(f).suffix.lower() in EMBEDDING_SUFFIXES]
    for path in sorted(found):
        try:
            if path.stat().st_size == 0:
                continue
        except OSError:
            continue
        if path.stem in index:
            log.warning("%s: another embedding is called %s (%s); using that one", path, path.stem, index[path.stem])
            continue
        index[path.stem] = path
    return index


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def mentioned(index: dict[str, Path], texts: Iterable[str]) -> dict[str, Path]:
    """The entries of `index` whose name occurs in one of `texts` (case and spaces ignored): the only files a
    prompt can call (a name matches only as a run of the prompt's own tokens), so no other file is read."""
    squashed = [_squash(t) for t in texts]
    return {name: path for name, path in index.items() if _squash(name) and any(_squash(name) in s for s in squashed)}


def load_for_prompts(folder: str | os.PathLike | None, texts: Iterable[str]) -> list[Embedding]:
    """The embeddings of `folder` the prompts `texts` may call, read and checked (any problem: one line naming the
    file, nothing returned). Width is checked against the model later (`check_widths`)."""
    texts = list(texts)
    if not texts:
        return []
    return [read_embedding(path, name) for name, path in mentioned(folder_index(folder), texts).items()]


# --- vectors into CLIP ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def vectors_at(text_encoder: Any, rows: Sequence[Sequence[tuple[int, Any]]]) -> Iterator[None]:
    """Inside the block, the text encoder's token embeddings of batch row b at positions p … p+len(v)-1 are the
    vectors v, for each (p, v) of `rows[b]` (cut at the row's end, as WebUI's `EmbeddingsWithFixes`). Works under
    autograd: a trainable v gets its gradient."""
    if not any(rows):
        yield
        return
    layer = text_encoder.get_input_embeddings()

    def hook(module: Any, args: Any, out: Any) -> Any:
        if out.shape[0] != len(rows):
            raise RuntimeError(f"embedding rows: {len(rows)} prepared, the text encoder ran {out.shape[0]}")
        out = out.clone()
        for b, items in enumerate(rows):
            for p, v in items:
                n = min(out.shape[1] - p, v.shape[0])
                if n > 0:
                    out[b, p : p + n] = v[:n].to(out.device, out.dtype)
        return out

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# --- the infotext ---------------------------------------------------------------------------------------------------

def ti_hashes(*used: Sequence[Embedding]) -> str:
    """WebUI's `TI hashes` value: per encoded text (the prompt, then the negative) its embeddings in order of first
    use, `name: hash`, joined by ", "; names lose ':' and ','; one with no hash is left out."""
    parts = []
    for embeddings in used:
        seen: dict[str, Embedding] = {}
        for e in embeddings:
            seen.setdefault(e.name, e)
        parts += [f"{n.replace(':', '').replace(',', '')}: {e.shorthash}" for n, e in seen.items() if e.shorthash]
    return ", ".join(parts)


def init_vectors(tokenizer: Any, text_encoder: Any, text: str, count: int) -> Any:
    """`count` starting vectors from `text` as WebUI's "create embedding" makes them: the text's first `count`
    tokens' embeddings spread over the vectors (vector i = token ⌊i·t/count⌋ of t tokens); an empty text (or one
    without tokens) gives zeros."""
    import torch

    weight = text_encoder.get_input_embeddings().weight
    vec = torch.zeros(count, weight.shape[-1], dtype=torch.float32)
    ids = tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"][:count] if text else []
    if ids:
        with torch.no_grad():
            embedded = weight[torch.tensor(ids, device=weight.device)].detach().to("cpu", torch.float32)
        for i in range(count):
            vec[i] = embedded[i * len(ids) // count]
    return vec
