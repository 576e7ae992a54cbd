"""ControlNet models as users have them: WebUI/ComfyUI single files and diffusers folders, loaded offline.

Single files come in the original (LDM) layout (`control_v11p_sd15_softedge.pth`, `control_sd15_hed.safetensors`:
`[control_model.]input_blocks.*`, `zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`) or in diffusers'
layout (a `diffusion_pytorch_model.safetensors` on its own). The file is recognised from key names and shapes
before anything is built, so a LoRA, a VAE, a base model or an SDXL ControlNet is refused with a message that
says what it is. The LDM → diffusers key table below is derived from the diffusers module's own key names, so
it covers any block layout. `.pth`/`.ckpt` are read only through torch's weights-only unpickler.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from charframe.deps import place
from charframe.errors import CharframeError
from charframe.models.checkpoint import model_file_hashes, shapes_and_reader
from charframe.models.detect import detect
from charframe.models.single_file import assign, check_shapes
from charframe.models.tiny import TINY_UNET
from charframe.util.files import DATA_DIR

SD15_CONFIG = DATA_DIR / "models" / "controlnet_sd15" / "config.json"
LDM_PREFIX = "control_model."
HINT = "pass an SD1.x ControlNet such as control_v11p_sd15_softedge.pth (.pth/.safetensors) or its diffusers folder"
#: UNet config keys a ControlNet shares with the base model it steers.
SHARED_KEYS = (
    "in_channels", "down_block_types", "block_out_channels", "layers_per_block", "norm_num_groups",
    "cross_attention_dim", "attention_head_dim", "use_linear_projection", "only_cross_attention",
    "upcast_attention", "flip_sin_to_cos", "freq_shift", "downsample_padding", "norm_eps", "act_fn",
)
TINY_HINT_CHANNELS = (8, 8, 16, 16)

# diffusers ResNet part → LDM ResBlock part (the same table the SD UNet uses).
_RESNET = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}" if tail else _RESNET.get(head, head)


# diffusers module path (regex) → LDM path; `per` = layers_per_block + 1 (LDM counts the downsampler as a block),
# `hint_out` = index of the hint encoder's last conv. Order matters only for readability: patterns are disjoint.
KEY_TABLE: tuple[tuple[str, Callable[..., str]], ...] = (
    (r"time_embedding\.linear_1\.(.+)", lambda m, per, hint_out: f"time_embed.0.{m[1]}"),
    (r"time_embedding\.linear_2\.(.+)", lambda m, per, hint_out: f"time_embed.2.{m[1]}"),
    (r"conv_in\.(.+)", lambda m, per, hint_out: f"input_blocks.0.0.{m[1]}"),
    (r"controlnet_cond_embedding\.conv_in\.(.+)", lambda m, per, hint_out: f"input_hint_block.0.{m[1]}"),
    (r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", lambda m, per, hint_out: f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"),
    (r"controlnet_cond_embedding\.conv_out\.(.+)", lambda m, per, hint_out: f"input_hint_block.{hint_out}.{m[1]}"),
    (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
     lambda m, per, hint_out: f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0.{_resnet(m[3])}"),
    (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
     lambda m, per, hint_out: f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}"),
    (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", lambda m, per, hint_out: f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"),
    (r"mid_block\.resnets\.(\d+)\.(.+)", lambda m, per, hint_out: f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"),
    (r"mid_block\.attentions\.0\.(.+)", lambda m, per, hint_out: f"middle_block.1.{m[1]}"),
    (r"controlnet_down_blocks\.(\d+)\.(.+)", lambda m, per, hint_out: f"zero_convs.{m[1]}.0.{m[2]}"),
    (r"controlnet_mid_block\.(.+)", lambda m, per, hint_out: f"middle_block_out.0.{m[1]}"),
)
_COMPILED = tuple((re.compile(p + "$"), f) for p, f in KEY_TABLE)


def ldm_key(key: str, config: dict[str, Any]) -> str:
    """One diffusers ControlNetModel key → its LDM name (without `control_model.`)."""
    per = int(config["layers_per_block"]) + 1
    hint_out = 2 * (2 * (len(config["conditioning_embedding_out_channels"]) - 1) + 1)
    for pattern, to_ldm in _COMPILED:
        m = pattern.match(key)
        if m:
            return to_ldm(m, per, hint_out)
    raise KeyError(f"no LDM name for ControlNet key {key!r}")


def ldm_names(diffusers_keys: list[str], config: dict[str, Any]) -> dict[str, str]:
    """LDM name → diffusers name for every key of a ControlNetModel built from `config`."""
    return {ldm_key(k, config): k for k in diffusers_keys}


@dataclass(frozen=True)
class ControlNetInfo:
    """What the PNG parameters and messages say about a loaded ControlNet."""

    name: str
    hash: str = ""  # WebUI's legacy model hash: the file's 64 KiB at 1 MiB, sha256, 8 hex ("" for folders, tiny)
    source: str = "tiny"  # "tiny", "single_file", "diffusers"

    def label(self) -> str:
        """`control_v11p_sd15_softedge [a8575a2a]`, as WebUI's ControlNet extension lists and writes it (its model
        list is keyed by WebUI's legacy hash, so pasted PNG info selects this model)."""
        return f"{self.name} [{self.hash}]" if self.hash else self.name


def sd15_controlnet_config() -> dict[str, Any]:
    """The shipped SD1.5 ControlNet config (diffusers `ControlNetModel`), no hub involved."""
    return json.loads(SD15_CONFIG.read_text(encoding="utf-8"))


def controlnet_config(unet_config: dict[str, Any] | None = None, hint_channels: tuple[int, ...] | None = None,
                      conditioning_channels: int = 3) -> dict[str, Any]:
    """The ControlNet config for a base UNet: SD1.5's with the UNet's shared keys (equal to the shipped file for
    an SD1.5-shaped base) and the hint encoder widths the file has."""
    config = sd15_controlnet_config()
    for key in SHARED_KEYS:
        if unet_config is not None and key in unet_config:
            value = unet_config[key]
            config[key] = list(value) if isinstance(value, tuple) else value
    if hint_channels is not None:
        config["conditioning_embedding_out_channels"] = list(hint_channels)
    config["conditioning_channels"] = conditioning_channels
    return config


def build_controlnet(config: dict[str, Any], *, meta: bool = False) -> Any:
    """A ControlNetModel from a config dict (on the meta device when `meta`, so no memory is used)."""
    from diffusers import ControlNetModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    if not meta:
        return ControlNetModel.from_config(cfg)
    from accelerate import init_empty_weights

    with init_empty_weights():
        return ControlNetModel.from_config(cfg)


def build_tiny_controlnet(seed: int = 0, unet_config: dict[str, Any] | None = None) -> Any:
    """A tiny random ControlNet matching the tiny UNet (charframe.models.tiny), deterministic from `seed`.

    Its zero convolutions get small random weights (a fresh ControlNet's are zero, which would make the
    control image do nothing), so tests and the demo see the control image steer the result."""
    import torch

    config = controlnet_config(unet_config or TINY_UNET, TINY_HINT_CHANNELS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_controlnet(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                    p.normal_(0.0, 0.05)
    return model.eval()


def _strip_prefix(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], str]:
    """Keys of the control part only: WebUI 1.0 files carry `control_model.` (and maybe a whole SD model)."""
    if any(k.startswith(LDM_PREFIX) for k in shapes):
        return {k[len(LDM_PREFIX):]: s for k, s in shapes.items() if k.startswith(LDM_PREFIX)}, LDM_PREFIX
    return shapes, ""


def identify(path: Path, shapes: dict[str, tuple[int, ...]], cross_attention_dim: int) -> str:
    """"ldm" or "diffusers" (the key layout of a ControlNet file), or a CharframeError saying what it is."""
    control, _ = _strip_prefix(shapes)
    if "input_hint_block.0.weight" in control or "zero_convs.0.0.weight" in control:
        layout, ctx_key = "ldm", "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    elif "controlnet_cond_embedding.conv_in.weight" in control:
        layout, ctx_key = "diffusers", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    else:
        sig = detect(shapes)
        what = sig.looks_like if sig is not None else f"an unknown file (first keys: {', '.join(sorted(shapes)[:3])})"
        if sig is not None and sig.id == "sd_v1":
            what = "an SD1.x base model"
        raise CharframeError(f"{path}: looks like {what}, not a ControlNet; {HINT}")
    if any(k.startswith(("label_emb.", "add_embedding.")) for k in control):
        raise CharframeError(f"{path}: looks like an SDXL ControlNet; {HINT}")
    # the text context width from any cross-attention key (SDXL has none in its first block)
    ctx = next((k for k in sorted(control) if k.endswith("attn2.to_k.weight")), ctx_key)
    width = control.get(ctx, (0, cross_attention_dim))[-1]
    if width != cross_attention_dim:
        family = {1024: "SD2.x", 2048: "SDXL"}.get(width, f"a {width}-wide")
        raise CharframeError(
            f"{path}: looks like {family} ControlNet (text context {width} wide, the base model's is "
            f"{cross_attention_dim}); {HINT}"
        )
    return layout


def _hint_channels(path: Path, control: dict[str, tuple[int, ...]], layout: str) -> tuple[tuple[int, ...], int]:
    """Hint encoder widths and conditioning channels read from the shapes."""
    if layout == "ldm":
        convs = sorted(int(k.split(".")[1]) for k in control if re.fullmatch(r"input_hint_block\.\d+\.weight", k))
        if len(convs) < 2 or convs != list(range(0, 2 * len(convs), 2)):
            found = ", ".join(f"input_hint_block.{i}" for i in convs)
            raise CharframeError(f"{path}: incomplete ControlNet: its hint encoder has only {found} (a full one has "
                                 f"8 convolutions, input_hint_block.0 … .14); re-download the file; {HINT}")
        outs = [control[f"input_hint_block.{i}.weight"][0] for i in convs[:-1]]
        first = control["input_hint_block.0.weight"]
    else:
        blocks = sorted({int(k.split(".")[2]) for k in control if k.startswith("controlnet_cond_embedding.blocks.")})
        outs = [control["controlnet_cond_embedding.conv_in.weight"][0]]
        outs += [control[f"controlnet_cond_embedding.blocks.{b}.weight"][0] for b in blocks]
        first = control["controlnet_cond_embedding.conv_in.weight"]
    return tuple(outs[0::2]), int(first[1])


def load_controlnet_file(path: Path, unet_config: dict[str, Any], dtype: Any) -> Any:
    """A single-file ControlNet (LDM or diffusers key layout) as a diffusers ControlNetModel."""
    import torch

    shapes, read = shapes_and_reader(path)
    layout = identify(path, shapes, int(unet_config.get("cross_attention_dim", 768)))
    control, prefix = _strip_prefix(shapes)
    hint, channels = _hint_channels(path, control, layout)
    config = controlnet_config(unet_config, hint, channels)
    model = build_controlnet(config, meta=True)
    names = ldm_names(list(model.state_dict()), config) if layout == "ldm" else {k: k for k in model.state_dict()}
    extra = [k for k in control if k not in names]
    if extra:
        raise CharframeError(f"{path}: ControlNet keys this layout does not have (e.g. {extra[0]}); {HINT}")
    meta_state = {names[k]: torch.empty(s, device="meta") for k, s in control.items()}
    check_shapes(path, model, meta_state, "ControlNet", "SD1.x ControlNet layout", HINT)
    state = read()
    return assign(model, {names[k[len(prefix):]]: v for k, v in state.items() if k.startswith(prefix)
                          and k[len(prefix):] in names}, dtype)


def load_controlnet_folder(path: Path, unet_config: dict[str, Any], dtype: Any) -> Any:
    """A diffusers ControlNet folder (config.json + diffusion_pytorch_model.*)."""
    from diffusers import ControlNetModel

    config_file = path / "config.json"
    if not config_file.is_file():
        raise CharframeError(f"{path}: not a diffusers ControlNet folder (no config.json); {HINT}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{config_file}: unreadable config ({exc})") from exc
    if config.get("_class_name") != "ControlNetModel":
        raise CharframeError(f"{path}: holds a {config.get('_class_name', 'model')}, not a ControlNetModel; {HINT}")
    want = unet_config.get("cross_attention_dim", 768)
    if config.get("cross_attention_dim") != want or config.get("addition_embed_type"):
        raise CharframeError(
            f"{path}: a ControlNet for another base model (text context {config.get('cross_attention_dim')} wide, "
            f"the base model's is {want}); {HINT}"
        )
    variant = _weights_variant(path)
    try:
        return ControlNetModel.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype,
                                               variant=variant).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CharframeError(f"{path}: cannot load this ControlNet folder ({first}); {HINT}") from exc


WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _weights_variant(path: Path) -> str | None:
    """None when the folder has plain weights, "fp16" (or another variant) when it has only
    `diffusion_pytorch_model.<variant>.safetensors`, as many downloaded ControlNet folders do."""
    if any((path / name).is_file() for name in WEIGHT_NAMES):
        return None
    variants = sorted(p.name.split(".")[1] for p in path.glob("diffusion_pytorch_model.*.safetensors")
                      if len(p.name.split(".")) == 3)
    if not variants:
        raise CharframeError(f"{path}: no ControlNet weights in this folder (diffusion_pytorch_model.safetensors or "
                             f"diffusion_pytorch_model.fp16.safetensors); {HINT}")
    return "fp16" if "fp16" in variants else variants[0]


def load_controlnet(path: str | Path | None, unet_config: dict[str, Any] | None = None, *,
                    dtype: Any = None, device: Any = "cpu") -> tuple[Any, ControlNetInfo]:
    """A ControlNet for the base model whose UNet config is `unet_config` (None path = tiny random demo one)."""
    import torch

    dtype = dtype or torch.float32
    unet_config = dict(unet_config or TINY_UNET)
    if path is None:
        model, info = build_tiny_controlnet(0, unet_config), ControlNetInfo("charframe-tiny-controlnet")
    else:
        path = Path(path).expanduser()
        if not path.exists():
            raise CharframeError(f"{path}: ControlNet model not found; {HINT}")
        if path.is_dir():
            model, info = load_controlnet_folder(path, unet_config, dtype), ControlNetInfo(path.name, "", "diffusers")
        else:
            model = load_controlnet_file(path, unet_config, dtype)
            info = ControlNetInfo(path.stem, model_file_hashes(path)[0], "single_file")
    return place(model, device, dtype).eval(), info
