"""What a kohya-format LoRA file holds: modules grouped from flat keys, their kind, and sanity checks.

A file is a flat `{key: tensor}` map whose keys read `<module>.<suffix>`; the module name is the
underscored path of the layer (`lora_unet_down_blocks_1_attentions_0_…_to_q`, `lora_te_text_model_…`)
and the suffix says which factor it is. Grouping them once gives every other step (merge, compress,
mix, inspect) a module-level view, and checking them once gives users errors that name the module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from charframe.errors import CharframeError
from charframe.lora.keys import MODULE_NAME, layer_shape, split_key

#: Factor keys of each supported network kind (kohya LoRA and LyCORIS LoCon share "lora").
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "lora": ("lora_down.weight", "lora_up.weight", "lora_mid.weight"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
}
ALPHA = "alpha"

#: Known-but-unsupported layouts, so the error says what the file is instead of "unknown key".
UNSUPPORTED_KEYS: dict[str, str] = {
    "dora_scale": "DoRA (weight-decomposed LoRA)",
    "diff": "LyCORIS full-matrix (diff)",
    "diff_b": "LyCORIS full-matrix (diff)",
    "on_input": "LyCORIS (IA)^3",
    "weight": "LyCORIS (IA)^3",
    "oft_blocks": "LyCORIS OFT/BOFT",
    "oft_diag": "LyCORIS OFT",
    "rescale": "LyCORIS BOFT",
    "a1.weight": "LyCORIS GLoRA",
    "a2.weight": "LyCORIS GLoRA",
    "b1.weight": "LyCORIS GLoRA",
    "b2.weight": "LyCORIS GLoRA",
    "bias_indices": "LyCORIS sparse bias",
    "bias_values": "LyCORIS sparse bias",
    "bias_size": "LyCORIS sparse bias",
    "lora_A.weight": "PEFT/diffusers-format LoRA (convert it to kohya format first)",
    "lora_B.weight": "PEFT/diffusers-format LoRA (convert it to kohya format first)",
}

_SUFFIX_KIND = {suffix: kind for kind, keys in KIND_KEYS.items() for suffix in keys}


@dataclass
class FileModule:
    """One adapted layer as a file holds it: kohya name, kind ("lora", "loha", "lokr"), tensors by suffix.

    (The trainer's nn.Module for one layer is `training.adapters.LoRAModule`; this is only data.)
    """

    name: str
    kind: str
    tensors: dict[str, torch.Tensor]
    #: the family's 1x1-conv layer names (None: SD1.x's), for updates a file stores flat
    conv1x1: tuple[str, ...] | None = None

    @property
    def alpha(self) -> float | None:
        a = self.tensors.get(ALPHA)
        return None if a is None else float(a.float().reshape(-1)[0])

    @property
    def rank(self) -> int | None:
        """The rank that alpha divides (kohya/LyCORIS convention); None for LoKr without factors."""
        t = self.tensors
        if self.kind == "lora":
            return int(t["lora_down.weight"].shape[0])
        if self.kind == "loha":
            return int(t["hada_w1_b"].shape[0])
        for key in ("lokr_w1_b", "lokr_w2_b"):
            if key in t:
                return int(t[key].shape[0])
        return None

    @property
    def scale(self) -> float:
        """alpha / rank, the factor kohya, LyCORIS and the WebUI apply (1 when alpha is absent)."""
        alpha, rank = self.alpha, self.rank
        return 1.0 if alpha is None or not rank else alpha / rank

    @property
    def kernel(self) -> tuple[int, ...]:
        """Spatial kernel size ((3, 3) for a 3x3 conv, () for a linear layer).

        Read from a 4-d factor where there is one; a LoHa without Tucker cores stores a conv's
        update flat (out × in·k·k), so its kernel comes from the layer the name says it is.
        """
        t = self.tensors
        for key in ("lora_mid.weight", "lora_down.weight", "hada_t1", "lokr_t2", "lokr_w2", "lokr_w2_b"):
            if key in t and t[key].dim() == 4:
                return tuple(int(s) for s in t[key].shape[2:])
        if self.kind == "loha" and t["hada_w1_a"].dim() == 2 and t["hada_w1_b"].dim() == 2:
            flat = (int(t["hada_w1_a"].shape[0]), int(t["hada_w1_b"].shape[1]))
            return layer_shape(self.name, flat, self.conv1x1)[2:]
        return ()

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.tensors.values())


@dataclass
class LoraNetwork:
    """A whole LoRA file: modules in file order plus its safetensors metadata, and the textual-inversion
    embeddings it bundles (`bundle_emb.<name>.…` keys, kept as they are: no block weight or rank applies)."""

    modules: dict[str, FileModule]
    metadata: dict[str, str] = field(default_factory=dict)
    source: Path | None = None
    #: For networks read lazily (tensors on the meta device): loads one module's data, checked.
    loader: Callable[[FileModule], FileModule] | None = None
    #: the model family it was made for (`charframe.lora.file_family`), None when nothing in it says
    family: str | None = None
    bundle: dict[str, torch.Tensor] = field(default_factory=dict)

    def materialize(self, module: FileModule) -> FileModule:
        """The module with real tensor data (itself unless the network was read lazily)."""
        return module if self.loader is None else self.loader(module)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"{m.name}.{k}": v for m in self.modules.values() for k, v in m.tensors.items()}, **self.bundle}

    def kinds(self) -> set[str]:
        return {m.kind for m in self.modules.values()}


def group_modules(tensors: dict[str, torch.Tensor], source: str | Path) -> dict[str, FileModule]:
    """Group flat kohya keys into modules; raise naming the file and the first key that does not fit."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    if not tensors:
        raise CharframeError(f"{source}: not a LoRA file (it holds no tensors)")
    for key, value in tensors.items():
        name, suffix = split_key(key)
        if suffix in UNSUPPORTED_KEYS:
            raise CharframeError(
                f"{source}: {UNSUPPORTED_KEYS[suffix]} is not supported (key '{key}'); "
                "charframe reads kohya LoRA/LoCon, LoHa and LoKr files"
            )
        if not MODULE_NAME.match(name) or (suffix not in _SUFFIX_KIND and suffix != ALPHA):
            raise CharframeError(
                f"{source}: not a kohya-format LoRA, or an unknown key layout: first unknown key '{key}' "
                "(expected keys like 'lora_unet_…_to_q.lora_down.weight', '….alpha', '….hada_w1_a', '….lokr_w1')"
            )
        groups.setdefault(name, {})[suffix] = value
    modules = {}
    for name, parts in groups.items():
        kinds = {_SUFFIX_KIND[s] for s in parts if s != ALPHA}
        if len(kinds) != 1:
            what = "only an alpha" if not kinds else "keys of several kinds: " + ", ".join(sorted(parts))
            raise CharframeError(f"{source}: module {name} has {what}")
        modules[name] = FileModule(name, kinds.pop(), parts)
    return modules


def _shape_error(source: str | Path, m: FileModule, detail: str) -> CharframeError:
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in m.tensors.items())
    return CharframeError(f"{source}: module {m.name}: {detail} ({shapes})")


def _check_pair(source, m: FileModule, a: str, b: str, a_dim: int, b_dim: int) -> None:
    """Tensor `a` axis a_dim must equal tensor `b` axis b_dim (the shared rank or size)."""
    ta, tb = m.tensors[a], m.tensors[b]
    if ta.dim() <= a_dim or tb.dim() <= b_dim or ta.shape[a_dim] != tb.shape[b_dim]:
        raise _shape_error(source, m, f"shape mismatch between {a} and {b}")


def _require(source, m: FileModule, *keys: str) -> None:
    missing = [k for k in keys if k not in m.tensors]
    if missing:
        raise _shape_error(source, m, f"missing {', '.join(missing)}")


def validate_module(m: FileModule, source: str | Path) -> None:
    """Check factor shapes agree and every value is finite; errors name the file and the module."""
    validate_shapes(m, source)
    validate_values(m, source)


def validate_shapes(m: FileModule, source: str | Path) -> None:
    """Factor shapes agree (works on meta tensors too)."""
    t = m.tensors
    if m.kind == "lora":
        _require(source, m, "lora_down.weight", "lora_up.weight")
        _check_pair(source, m, "lora_up.weight", "lora_down.weight", 1, 0)
        if "lora_mid.weight" in t:
            _check_pair(source, m, "lora_mid.weight", "lora_down.weight", 1, 0)
            _check_pair(source, m, "lora_up.weight", "lora_mid.weight", 1, 0)
    elif m.kind == "loha":
        _require(source, m, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        if ("hada_t1" in t) != ("hada_t2" in t):
            raise _shape_error(source, m, "hada_t1 and hada_t2 must come together")
        if "hada_t1" in t:  # Tucker: w_a is [rank, out], w_b is [rank, in]
            for i in "12":
                _check_pair(source, m, f"hada_t{i}", f"hada_w{i}_a", 0, 0)
                _check_pair(source, m, f"hada_t{i}", f"hada_w{i}_b", 1, 0)
            _check_pair(source, m, "hada_w1_a", "hada_w2_a", 1, 1)
        else:
            _check_pair(source, m, "hada_w1_a", "hada_w1_b", 1, 0)
            _check_pair(source, m, "hada_w2_a", "hada_w2_b", 1, 0)
            _check_pair(source, m, "hada_w1_a", "hada_w2_a", 0, 0)
        _check_pair(source, m, "hada_w1_b", "hada_w2_b", 1, 1)
    else:
        if "lokr_w1" not in t:
            _require(source, m, "lokr_w1_a", "lokr_w1_b")
            _check_pair(source, m, "lokr_w1_a", "lokr_w1_b", 1, 0)
        if "lokr_w2" not in t:
            _require(source, m, "lokr_w2_a", "lokr_w2_b")
            if "lokr_t2" in t:
                _check_pair(source, m, "lokr_t2", "lokr_w2_a", 0, 0)
                _check_pair(source, m, "lokr_t2", "lokr_w2_b", 1, 0)
            else:
                _check_pair(source, m, "lokr_w2_a", "lokr_w2_b", 1, 0)
    if ALPHA in t and t[ALPHA].numel() != 1:
        raise _shape_error(source, m, "alpha must be a single number")
    for key, value in t.items():
        if not value.is_floating_point():
            raise _shape_error(source, m, f"{key} is not a floating-point tensor")


def validate_values(m: FileModule, source: str | Path) -> None:
    """Every value finite; the error names the file, the module and the tensor."""
    for key, value in m.tensors.items():
        if not _all_finite(value):
            raise CharframeError(f"{source}: module {m.name}: {key} contains NaN or Inf values")


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN/Inf, in one reduction pass: a NaN/Inf makes the sum non-finite, and the accumulator
    (float32 for fp16, float64 otherwise) is too wide to overflow on finite values."""
    return bool(torch.isfinite(t.sum(dtype=torch.float32 if t.dtype == torch.float16 else torch.float64)))


def network_type(net: LoraNetwork) -> str:
    """A short name users know: LoRA, LoRA (Lora3x3/C3Lier), LoCon, LoHa, LoKr, or a mix of them."""
    kinds = net.kinds()
    if kinds == {"lora"}:
        args = net.metadata.get("ss_network_module", "")
        if "lycoris" in args:
            return "LoCon"
        conv3 = any(m.kernel not in ((), (1, 1)) for m in net.modules.values())
        return "LoRA (with 3x3 conv: Lora3x3/C3Lier)" if conv3 else "LoRA"
    names = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}
    return " + ".join(names[k] for k in sorted(kinds, key=list(names).index))


def network_args(metadata: dict[str, str]) -> dict:
    """`ss_network_args` parsed (sd-scripts stores it as a JSON object string); {} when absent/bad."""
    try:
        value = json.loads(metadata.get("ss_network_args", "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
