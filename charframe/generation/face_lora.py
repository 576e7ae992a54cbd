"""Apply a kohya-format LoRA/LyCORIS file (the character's face LoRA) to a loaded model at a weight.

The body set is generated with the face LoRA of the same character (CONVENTIONS §5). Its update is merged into
the layers (W += weight · ΔW, ΔW from `charframe.lora.functional` for LoRA, LoCon, LoHa and LoKr), which costs
nothing per step and is exactly what WebUI computes for a LoRA at that weight. Layer names are sd-scripts'
(`lora_unet_…`, `lora_te_text_model_…`) as the trainer writes them.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.lora.file_family import check_same_family
from charframe.lora.functional import module_delta
from charframe.lora.io import MODEL_HASH_KEY, lora_file_hashes, read_network
from charframe.lora.targets import kohya_targets, model_family
from charframe.models.checkpoint import model_file_hashes

log = logging.getLogger(__name__)


def apply_lora(unet: Any, text_encoder: Any, path: Path, weight: float, backup: dict[Any, Any] | None = None) -> int:
    """Merge the LoRA at `path` into `unet`/`text_encoder` at `weight`; returns the number of layers changed.

    `text_encoder` is one encoder or the family's list (SDXL: both). Refuses a LoRA of another model family, and a
    file none of whose modules fit the model (a LoRA for another architecture). With `backup`, each
    changed layer's original weight is kept there (layer → copy) first, for `lora_applied` to put back."""
    import torch

    if not path.is_file():
        raise CharframeError(f"{path}: face LoRA not found; train the face set first or give the LoRA file's path")
    net = read_network(path)
    fam = model_family(unet)
    check_same_family(path, get_family(net.family) if net.family else None, fam)
    layers = {name: layer for name, layer, _ in kohya_targets(unet, text_encoder, conv=True, family=fam)}
    unknown = [name for name in net.modules if name not in layers]
    if len(unknown) == len(net.modules):
        raise CharframeError(f"{path}: none of its modules fit this {fam.name} model (e.g. {unknown[0]}); "
                             f"is it an {fam.name} LoRA?")
    if unknown:
        log.warning("%s: %d module(s) do not fit this model and are skipped (e.g. %s)", path.name, len(unknown), unknown[0])
    if weight == 0:
        return 0
    changed = 0
    with torch.no_grad():
        for name, module in net.modules.items():
            layer = layers.get(name)
            if layer is None:
                continue
            delta = module_delta(module.kind, net.materialize(module).tensors)
            if delta.numel() != layer.weight.numel():
                raise CharframeError(f"{path}: module {name} has shape {tuple(delta.shape)}, the model's layer "
                                     f"{tuple(layer.weight.shape)}; is it a LoRA for this base model?")
            w = layer.weight
            if backup is not None:
                backup.setdefault(layer, w.detach().clone())
            w.copy_((w.float() + weight * delta.reshape(w.shape).to(w.device)).to(w.dtype))
            changed += 1
    return changed


@contextlib.contextmanager
def lora_applied(unet: Any, text_encoder: Any, path: Path, weight: float = 1.0) -> Iterator[int]:
    """The LoRA at `path` merged into the models inside the block, and the exact original weights back after it
    (copies of the changed layers are kept, so nothing drifts by rounding when several LoRAs are tried in turn,
    as the preview grid does). Yields the number of layers changed."""
    import torch

    backup: dict[Any, Any] = {}
    try:
        yield apply_lora(unet, text_encoder, path, weight, backup)
    finally:
        with torch.no_grad():
            for layer, original in backup.items():
                layer.weight.copy_(original)


def lora_short_hash(path: Path) -> str:
    """The 12-hex-digit hash WebUI's Lora extension writes into `Lora hashes:` (and looks LoRAs up by): the
    file's `sshs_model_hash` metadata when it has one, else the SHA-256 of its tensor data (safetensors) or of
    the whole file."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get(MODEL_HASH_KEY, "")
        return (stored or lora_file_hashes(path)[0])[:12]
    return model_file_hashes(path)[1][:12]
