"""How other tools read a LoRA file's keys, re-written from their code for the bundle tests (no tool code copied).

- WebUI, extensions-builtin/Lora/networks.py `load_network`: each key is cut at its first dot; `bundle_emb` keys are
  cut again into the embedding's name and the rest; a `string_to_param.<k>` rest REPLACES the name's
  string_to_param dict with {k: weight} (so of several only the last survives, and WebUI then asserts one term).
- sd-scripts, networks/lora.py `create_network_from_weights`: keys without a dot are skipped; the module name is the
  key up to its first dot; a key containing "alpha" sets that module's alpha, one containing "lora_down" its dim;
  modules are then made only for the model's layers whose names have a dim. Run for real on a bundled file
  (sd-scripts of /tmp/embed-ref, tiny model): 216 modules with and without the bundle key, the bundle key the only
  unexpected key of `load_state_dict(strict=False)`, identical text encoder and UNet outputs.
"""

from __future__ import annotations

from typing import Any


def webui_bundle_grouping(keys_and_weights: dict[str, Any]) -> dict[str, dict[str, Any]]:
    bundle: dict[str, dict[str, Any]] = {}
    for key, weight in keys_and_weights.items():
        head, _, rest = key.partition(".")
        if head == "bundle_emb":
            name, vec_name = rest.split(".", 1)
            entry = bundle.get(name, {})
            if vec_name.split(".")[0] == "string_to_param":
                _, k2 = vec_name.split(".", 1)
                entry["string_to_param"] = {k2: weight}
            else:
                entry[vec_name] = weight
            bundle[name] = entry
    return bundle


def sd_scripts_dims(keys_and_weights: dict[str, Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """(module → dim, module → alpha) as sd-scripts' create_network_from_weights collects them."""
    dims: dict[str, int] = {}
    alphas: dict[str, Any] = {}
    for key, value in keys_and_weights.items():
        if "." not in key:
            continue
        name = key.split(".")[0]
        if "alpha" in key:
            alphas[name] = value
        elif "lora_down" in key:
            dims[name] = value.size()[0]
    for name in dims:
        alphas.setdefault(name, dims[name])
    return dims, alphas
