"""The trainable network: kohya LoRA modules (Lora1x1/Lora3x3) and LyCORIS (Locon/Loha), on any model family.

Which layers are wrapped, and under which key names, is `charframe.lora.targets` (the kohya key contract,
shared with the generator that merges a finished LoRA into the same layers). Text encoders come as one module or
the family's list (SDXL: CLIP-L, OpenCLIP-G → `lora_te1_…`, `lora_te2_…`); LyCORIS names UNet layers by the
diffusers module tree it walks, so for families whose files use the original layout's names (SDXL) its modules
are renamed to sd-scripts' names before they are registered.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator

import torch
from torch import nn

from charframe.errors import CharframeError
from charframe.families.family import Family
from charframe.lora.keys import TE_PREFIX, UNET_PREFIX
from charframe.lora.targets import encoders_of, kohya_targets, kohya_text_root, model_family, unet_key_renames

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class NetworkSpec:
    """What to train: `kind` "lora" (kohya networks.lora) or a LyCORIS `algo` ("lora"=LoCon, "loha")."""

    dim: int
    alpha: float
    conv_dim: int | None = None
    conv_alpha: float | None = None
    lycoris_algo: str | None = None

    @classmethod
    def from_recipe(cls, network: Any) -> "NetworkSpec":
        """From a plan's `NetworkRecipe` (dim, module, algo, alpha, conv_dim, conv_alpha)."""
        algo = network.algo if network.module.startswith("lycoris") else None
        return cls(network.dim, network.alpha, network.conv_dim, network.conv_alpha, algo)


class LoRAModule(nn.Module):
    """kohya LoRA on one layer: `y = layer(x) + up(down(x)) * multiplier * alpha / dim`.

    `down` copies the layer's kernel/stride/padding (a 3x3 conv stays 3x3), `up` is 1x1/linear and
    starts at zero, so training starts from the base model exactly.
    """

    def __init__(self, name: str, layer: nn.Module, dim: int, alpha: float, multiplier: float = 1.0) -> None:
        super().__init__()
        self.lora_name = name
        self.lora_dim = int(dim)
        if isinstance(layer, nn.Conv2d):
            self.lora_down = nn.Conv2d(layer.in_channels, dim, layer.kernel_size, layer.stride, layer.padding, bias=False)
            self.lora_up = nn.Conv2d(dim, layer.out_channels, 1, 1, bias=False)
        else:
            self.lora_down = nn.Linear(layer.in_features, dim, bias=False)
            self.lora_up = nn.Linear(dim, layer.out_features, bias=False)
        alpha = float(dim if not alpha else alpha)
        self.register_buffer("alpha", torch.tensor(alpha))
        self.scale = alpha / dim
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.multiplier = multiplier
        self._layer = [layer]  # not a child: the base weights stay out of this module's state_dict
        self._layer_forward = None

    def apply_to(self) -> None:
        layer = self._layer[0]
        self._layer_forward = layer.forward
        layer.forward = self.forward

    def restore(self) -> None:
        if self._layer_forward is not None:
            self._layer[0].forward = self._layer_forward
            self._layer_forward = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self._layer_forward(x)
        w = self.lora_down.weight
        delta = self.lora_up(self.lora_down(x if torch.is_autocast_enabled(x.device.type) else x.to(w.dtype)))
        return base + (delta * (self.multiplier * self.scale)).to(base.dtype)


class KohyaLoRANetwork(nn.Module):
    """The LoRA modules of one model, registered under their key names (so `state_dict()` is the file)."""

    def __init__(self, modules: list[LoRAModule]) -> None:
        super().__init__()
        self.text_encoder_loras = [m for m in modules if m.lora_name.startswith(TE_PREFIX)]
        self.unet_loras = [m for m in modules if m.lora_name.startswith(UNET_PREFIX)]
        for m in modules:
            self.add_module(m.lora_name, m)

    def apply_to(self) -> None:
        for m in self.text_encoder_loras + self.unet_loras:
            m.apply_to()

    def restore(self) -> None:
        for m in self.text_encoder_loras + self.unet_loras:
            m.restore()


def _kohya_network(spec: NetworkSpec, unet: nn.Module, text_encoder: Any, family: str | Family | None) -> KohyaLoRANetwork:
    modules = []
    for key, layer, is_3x3 in kohya_targets(unet, text_encoder, conv=bool(spec.conv_dim), family=family):
        dim, alpha = (spec.conv_dim, spec.conv_alpha) if is_3x3 else (spec.dim, spec.alpha)
        modules.append(LoRAModule(key, layer, int(dim), float(alpha)))
    return KohyaLoRANetwork(modules)


def lycoris_preset_path() -> str:
    """The shipped LyCORIS preset (`charframe/data/lycoris_sd1_preset.toml`) as a file path."""
    return str(resources.files("charframe.data").joinpath("lycoris_sd1_preset.toml"))


class _AlternativeClassFilter(logging.Filter):
    """The preset names CLIP's attention class as both older (`CLIPSdpaAttention`) and newer
    (`CLIPAttention`) transformers call it, so LyCORIS always finds one of the two unmatched; that
    warning alone is dropped (any other unmatched class still warns)."""

    NAMES = ("CLIPAttention", "CLIPSdpaAttention")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(msg.endswith(f"target module classes: ['{n}']") for n in self.NAMES)


@contextlib.contextmanager
def _quiet_lycoris() -> Iterator[None]:
    lg = logging.getLogger("LyCORIS")
    level, only_one = lg.level, _AlternativeClassFilter()
    lg.setLevel(logging.WARNING)
    lg.addFilter(only_one)
    try:
        yield
    finally:
        lg.setLevel(level)
        lg.removeFilter(only_one)


def lycoris_text_roots(text_encoder: Any, unet: nn.Module, family: str | Family | None) -> Any:
    """What LyCORIS takes for the text encoders: one root for a one-encoder family (`lora_te_…`), a list for SDXL
    (`lora_te1_…`, `lora_te2_…`), or None."""
    roots = [kohya_text_root(t) for t in encoders_of(text_encoder)]
    if not roots:
        return None
    return roots if len(model_family(unet, family).text_encoders) > 1 else roots[0]


def rename_modules(tensors: dict[str, torch.Tensor], table: dict[str, str]) -> dict[str, torch.Tensor]:
    """`<module>.<suffix>` keys with the module renamed by `table` (others unchanged)."""
    out = {}
    for key, value in tensors.items():
        module, _, suffix = key.partition(".")
        out[f"{table.get(module, module)}.{suffix}"] = value
    return out


def _lycoris_network(spec: NetworkSpec, unet: nn.Module, text_encoder: Any, family: str | Family | None) -> nn.Module:
    from lycoris.kohya import create_network

    te_root = lycoris_text_roots(text_encoder, unet, family)
    with _quiet_lycoris():
        net = create_network(
            1.0, spec.dim, spec.alpha, None, te_root, unet,
            algo=spec.lycoris_algo, conv_dim=spec.conv_dim or 0, conv_alpha=spec.conv_alpha or 1,
            preset=lycoris_preset_path(),
        )
    renames = unet_key_renames(unet, family)
    for m in net.unet_loras:
        m.lora_name = renames.get(m.lora_name, m.lora_name)
    net._charframe_roots = (te_root, unet)  # noqa: SLF001 - LyCORIS' apply_to needs them again
    return net


def create_network(spec: NetworkSpec, unet: nn.Module, text_encoder: Any, family: str | Family | None = None) -> nn.Module:
    """Build the network and hook it into `unet` and the text encoders (their forward now includes it).

    `text_encoder`: one encoder, the family's list (SDXL: both), or None to train the UNet only."""
    if spec.lycoris_algo:
        net = _lycoris_network(spec, unet, text_encoder, family)
        te_root, _ = net._charframe_roots  # noqa: SLF001
        with _quiet_lycoris():
            net.apply_to(te_root, unet, te_root is not None, True)
    else:
        net = _kohya_network(spec, unet, text_encoder, family)
        net.apply_to()
    if not net.unet_loras:
        raise CharframeError("no LoRA target layers found in the UNet: is this a Stable Diffusion UNet?")
    return net


def remove_network(net: nn.Module) -> None:
    """Unhook the network (the base model runs as before)."""
    if isinstance(net, KohyaLoRANetwork):
        net.restore()
        return
    for m in list(net.unet_loras) + list(net.text_encoder_loras):
        if hasattr(m, "restore"):
            m.restore()


def param_groups(net: nn.Module, unet_lr: float | None, te_lr: float | None) -> list[dict[str, Any]]:
    """Optimizer parameter groups, text encoder first (as sd-scripts logs them); lr left out when None."""
    groups = []
    for modules, lr in ((net.text_encoder_loras, te_lr), (net.unet_loras, unet_lr)):
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, **({} if lr is None else {"lr": lr})})
    return groups


def network_state_dict(net: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The file's tensors: `<key>.lora_down.weight`, `<key>.lora_up.weight`, `<key>.alpha`, ... on CPU."""
    return {
        k: (v.detach().to("cpu", dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in net.state_dict().items()
    }


def load_network_weights(net: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load a saved LoRA into `net` (to continue training); returns the keys the file lacked.

    Like sd-scripts' --network_weights the load is not strict about missing modules (they start
    fresh), but a module of another shape or kind means another logic/dim: that is an error.
    """
    own = net.state_dict()
    unexpected = sorted(k for k in tensors if k not in own)
    if unexpected:
        raise CharframeError(
            f"{source}: {len(unexpected)} key(s) do not fit this network (e.g. {unexpected[0]}); "
            "continue only from a LoRA trained with the same network type"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CharframeError(
                f"{source}: {k} has shape {tuple(v.shape)}, this run needs {tuple(own[k].shape)}; "
                "continue with the same {param} as the file was trained with", param="dim"
            )
    missing = sorted(k for k in own if k not in tensors)
    tensors = _keep_own_alpha(tensors, own, source)  # drops the alpha keys: the run keeps its own
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
    if missing:
        log.warning("%s: %d tensor(s) not in the file start fresh (e.g. %s)", source, len(missing), missing[0])
    return missing


_FIRST_FACTOR = (".lora_up.weight", ".hada_w1_a")


def _keep_own_alpha(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str) -> dict:
    """Keep this run's alpha; rescale a factor so the file's effective update is unchanged."""
    out = dict(tensors)
    changed = 0
    for key in [k for k in tensors if k.endswith(".alpha")]:
        file_alpha, run_alpha = float(tensors[key]), float(own[key])
        del out[key]
        if math.isclose(file_alpha, run_alpha):
            continue
        module = key[: -len(".alpha")]
        for suffix in _FIRST_FACTOR:
            if module + suffix in out:
                out[module + suffix] = out[module + suffix].float() * (file_alpha / run_alpha)
        changed += 1
    if changed:
        log.warning("%s: alpha differs from this logic's in %d module(s); weights rescaled to match", source, changed)
    return out


def attach_lora(
    unet: nn.Module, text_encoder: Any, tensors: dict[str, torch.Tensor], multiplier: float = 1.0,
    family: str | Family | None = None,
) -> nn.Module:
    """Apply a saved kohya LoRA / LoCon / LoHa to a model for inference (e.g. a diffusers pipeline).

    diffusers' `load_lora_weights` reads kohya LoRA and LoCon but has no LoHa converter; this path
    (LyCORIS for LoHa) covers all kinds charframe writes.
    """
    if any(k.endswith(".hada_w1_a") for k in tensors):
        from lycoris.kohya import create_network_from_weights

        renames = unet_key_renames(unet, family)  # LyCORIS finds layers by diffusers paths
        tensors = rename_modules(tensors, {new: old for old, new in renames.items()})
        te_root = lycoris_text_roots(text_encoder, unet, family)
        with _quiet_lycoris():
            net, _ = create_network_from_weights(multiplier, None, None, te_root, unet, weights_sd=tensors)
            net.apply_to(te_root, unet, te_root is not None, True)
        net.load_state_dict(tensors, strict=False)
    else:
        modules = []
        for key, layer, _ in kohya_targets(unet, text_encoder, conv=True, family=family):
            down = tensors.get(f"{key}.lora_down.weight")
            if down is not None:
                alpha = tensors.get(f"{key}.alpha")
                m = LoRAModule(key, layer, down.shape[0], float(alpha) if alpha is not None else down.shape[0], multiplier)
                modules.append(m)
        net = KohyaLoRANetwork(modules)
        net.load_state_dict(tensors, strict=False)
        net.apply_to()
    ref = next(unet.parameters())
    return net.to(ref.device, ref.dtype).eval().requires_grad_(False)
