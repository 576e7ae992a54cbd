"""ControlNet models as users have them: WebUI/ComfyUI single files and diffusers folders, loaded offline, for
the base model's family (SD1.x, SDXL).

Single files come in the original (LDM) layout (`control_v11p_sd15_softedge.pth`, `control_sd15_hed.safetensors`:
`[control_model.]input_blocks.*`, `zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`; SDXL ones add
`label_emb.*`) or in diffusers' layout (a `diffusion_pytorch_model.safetensors` on its own: NoobAI-XL's and
xinsir's files). The file is recognised from key names and shapes before anything is built, so a LoRA, a VAE, a
base model or a ControlNet of another family is refused with a message that says what it is. The config is the
base UNet's (a ControlNet copies its encoder) with what the file's shapes say: hint encoder widths, and for
SDXL the transformer depth per level (the "small"/"mid" SDXL ControlNets are shallower than the UNet). xinsir's
union ControlNets (`task_embedding`) become diffusers' `ControlNetUnionModel` (`models.controlnet_union`). The
LDM → diffusers key table below is derived from the diffusers module's own key names, so it covers any block
layout. `.pth`/`.ckpt` are read only through torch's weights-only unpickler.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from charframe.deps import place
from charframe.errors import CharframeError
from charframe.families.family import Family, families, of_context_width, of_unet_config
from charframe.models.checkpoint import model_file_hashes, shapes_and_reader
from charframe.models.controlnet_union import build_union, is_union, union_config
from charframe.models.detect import detect
from charframe.models.single_file import assign, check_shapes
from charframe.models.tiny import TINY_SDXL_UNET, TINY_UNET
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
#: what a base with an added embedding (SDXL: pooled text + size ids) passes on too: the ControlNet reads them
ADDED_EMBEDDING_KEYS = (
    "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
    "transformer_layers_per_block", "num_attention_heads",
)
TINY_HINT_CHANNELS = (8, 8, 16, 16)


def hint(fam: Family) -> str:
    """"pass an SDXL ControlNet such as …": the family's example (data/families/<id>.toml)."""
    example = fam.data.get("generation", {}).get("controlnet_example")
    return f"pass {example}" if example else HINT

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
    (r"add_embedding\.linear_1\.(.+)", lambda m, per, hint_out: f"label_emb.0.0.{m[1]}"),
    (r"add_embedding\.linear_2\.(.+)", lambda m, per, hint_out: f"label_emb.0.2.{m[1]}"),
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
    shared = SHARED_KEYS + (ADDED_EMBEDDING_KEYS if unet_config and unet_config.get("addition_embed_type") else ())
    for key in shared:
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


def build_tiny_union(seed: int = 0, unet_config: dict[str, Any] | None = None, control_types: int = 8) -> Any:
    """A tiny random union ControlNet (xinsir's architecture, `control_types` 8 as promax) for an SDXL-shaped
    UNet config (the tiny SDXL one by default), its zero layers given small random weights like
    `build_tiny_controlnet`'s, so the control type and image steer the result."""
    import torch

    base = controlnet_config(unet_config or TINY_SDXL_UNET, TINY_HINT_CHANNELS)
    width = int(base["block_out_channels"][0])
    shapes = {"task_embedding": (control_types, width), "spatial_ch_projs.weight": (width, width),
              "transformer_layes.0.ln_1.weight": (width,)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_union(union_config(base, shapes))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out",
                                    "spatial_ch_projs")):
                    p.normal_(0.0, 0.05)
    return model.eval()


def _strip_prefix(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], str]:
    """Keys of the control part only: WebUI 1.0 files carry `control_model.` (and maybe a whole SD model)."""
    if any(k.startswith(LDM_PREFIX) for k in shapes):
        return {k[len(LDM_PREFIX):]: s for k, s in shapes.items() if k.startswith(LDM_PREFIX)}, LDM_PREFIX
    return shapes, ""


def _context_width(control: dict[str, tuple[int, ...]]) -> int:
    """The text context width a ControlNet's cross-attention reads (0 when it has none)."""
    return next((s[-1] for k, s in sorted(control.items()) if k.endswith("attn2.to_k.weight")), 0)


def _family_label(width: int, added_embedding: bool) -> str:
    """"an SDXL", "an SD1.x", "an SD2.x": the family a ControlNet was made for, from its text width, else (the tiny
    test models' widths are no family's) from whether it reads an added (pooled/size) embedding."""
    if width == 1024 and not added_embedding:
        return "an SD2.x"
    fam = of_context_width(width)
    if fam is None:
        fam = next((f for f in families() if bool(f.unet_marks.get("addition_embed_type")) == added_embedding), None)
    return f"an {fam.name}" if fam else f"a {width}-wide"


def identify(path: Path, shapes: dict[str, tuple[int, ...]], unet_config: dict[str, Any]) -> str:
    """"ldm" or "diffusers" (the key layout of a ControlNet file), or a CharframeError saying what it is: not a
    ControlNet, or one for another family than the base UNet's (`unet_config`)."""
    base = of_unet_config(unet_config)
    fix = hint(base)
    cross_attention_dim = int(unet_config.get("cross_attention_dim", 768))
    added_embedding = bool(unet_config.get("addition_embed_type"))
    control, _ = _strip_prefix(shapes)
    if "input_hint_block.0.weight" in control or "zero_convs.0.0.weight" in control:
        layout = "ldm"
    elif "controlnet_cond_embedding.conv_in.weight" in control:
        layout = "diffusers"
    else:
        sig = detect(shapes)
        what = sig.looks_like if sig is not None else f"an unknown file (first keys: {', '.join(sorted(shapes)[:3])})"
        if sig is not None and sig.id == "sd_v1":
            what = "an SD1.x base model"
        elif sig is not None and sig.supported:
            what = f"an {sig.looks_like} base model"
        raise CharframeError(f"{path}: looks like {what}, not a ControlNet; {fix}")
    width = _context_width(control)
    has_added = any(k.startswith(("label_emb.", "add_embedding.")) for k in control)
    if (width and width != cross_attention_dim) or has_added != added_embedding:
        label = _family_label(width, has_added)
        raise CharframeError(
            f"{path}: looks like {label} ControlNet (text context {width} wide, the base model's "
            f"{cross_attention_dim}: it is an {base.name} model); {fix}"
        )
    return layout


def _hint_channels(path: Path, control: dict[str, tuple[int, ...]], layout: str,
                   fix: str = HINT) -> tuple[tuple[int, ...], int]:
    """Hint encoder widths and conditioning channels read from the shapes."""
    if layout == "ldm":
        convs = sorted(int(k.split(".")[1]) for k in control if re.fullmatch(r"input_hint_block\.\d+\.weight", k))
        if len(convs) < 2 or convs != list(range(0, 2 * len(convs), 2)):
            found = ", ".join(f"input_hint_block.{i}" for i in convs)
            raise CharframeError(f"{path}: incomplete ControlNet: its hint encoder has only {found} (a full one has "
                                 f"8 convolutions, input_hint_block.0 … .14); re-download the file; {fix}")
        outs = [control[f"input_hint_block.{i}.weight"][0] for i in convs[:-1]]
        first = control["input_hint_block.0.weight"]
    else:
        blocks = sorted({int(k.split(".")[2]) for k in control if k.startswith("controlnet_cond_embedding.blocks.")})
        outs = [control["controlnet_cond_embedding.conv_in.weight"][0]]
        outs += [control[f"controlnet_cond_embedding.blocks.{b}.weight"][0] for b in blocks]
        first = control["controlnet_cond_embedding.conv_in.weight"]
    return tuple(outs[0::2]), int(first[1])


def transformer_depths(control: dict[str, tuple[int, ...]], layout: str, config: dict[str, Any]) -> list[int] | None:
    """Transformer blocks per down level as the file has them (the "small"/"mid" SDXL ControlNets are shallower
    than their UNet), or None for a base without an added embedding (SD1.x files follow the UNet)."""
    if not config.get("addition_embed_type"):
        return None
    levels = len(config["down_block_types"])
    depth = config.get("transformer_layers_per_block", 1)
    depths = list(depth) if isinstance(depth, (list, tuple)) else [depth] * levels
    per = int(config["layers_per_block"]) + 1
    pattern = (re.compile(r"input_blocks\.(\d+)\.1\.transformer_blocks\.(\d+)\.") if layout == "ldm"
               else re.compile(r"down_blocks\.(\d+)\.attentions\.0\.transformer_blocks\.(\d+)\."))
    found: dict[int, int] = {}
    for key in control:
        m = pattern.match(key)
        if m:
            level = (int(m[1]) - 1) // per if layout == "ldm" else int(m[1])
            found[level] = max(found.get(level, 0), int(m[2]) + 1)
    return [found.get(i, d) for i, d in enumerate(depths)]


def _file_config(path: Path, control: dict[str, tuple[int, ...]], layout: str,
                 unet_config: dict[str, Any]) -> dict[str, Any]:
    """The diffusers config of a ControlNet file for a base UNet: the UNet's, plus what the shapes say."""
    hint_widths, channels = _hint_channels(path, control, layout, hint(of_unet_config(unet_config)))
    config = controlnet_config(unet_config, hint_widths, channels)
    depths = transformer_depths(control, layout, config)
    if depths is not None:
        config["transformer_layers_per_block"] = depths
    return config


def load_controlnet_file(path: Path, unet_config: dict[str, Any], dtype: Any) -> Any:
    """A single-file ControlNet (LDM or diffusers key layout; a union ControlNet too) as a diffusers model."""
    import torch

    shapes, read = shapes_and_reader(path)
    fam = of_unet_config(unet_config)
    layout = identify(path, shapes, unet_config)
    control, prefix = _strip_prefix(shapes)
    config = _file_config(path, control, layout, unet_config)
    union = layout == "diffusers" and is_union(control)
    if union:
        config = union_config(config, control)
    model = build_union(config, meta=True) if union else build_controlnet(config, meta=True)
    names = ldm_names(list(model.state_dict()), config) if layout == "ldm" else {k: k for k in model.state_dict()}
    extra = [k for k in control if k not in names]
    if extra:
        raise CharframeError(f"{path}: ControlNet keys this layout does not have (e.g. {extra[0]}); {hint(fam)}")
    meta_state = {names[k]: torch.empty(s, device="meta") for k, s in control.items()}
    check_shapes(path, model, meta_state, "ControlNet", f"{fam.name} ControlNet layout", hint(fam))
    state = read()
    return assign(model, {names[k[len(prefix):]]: v for k, v in state.items() if k.startswith(prefix)
                          and k[len(prefix):] in names}, dtype)


def load_controlnet_folder(path: Path, unet_config: dict[str, Any], dtype: Any) -> Any:
    """A diffusers ControlNet folder (config.json + diffusion_pytorch_model.*); xinsir's union folders (their
    config names `num_control_type`) load as `ControlNetUnionModel`."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    fam = of_unet_config(unet_config)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CharframeError(f"{path}: not a diffusers ControlNet folder (no config.json); {hint(fam)}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CharframeError(f"{config_file}: unreadable config ({exc})") from exc
    union = config.get("_class_name") == "ControlNetUnionModel" or "num_control_type" in config
    if config.get("_class_name") not in ("ControlNetModel", "ControlNetUnionModel"):
        raise CharframeError(f"{path}: holds a {config.get('_class_name', 'model')}, not a ControlNetModel; {hint(fam)}")
    want = unet_config.get("cross_attention_dim", 768)
    if config.get("cross_attention_dim") != want or bool(config.get("addition_embed_type")) != bool(unet_config.get("addition_embed_type")):
        width = int(config.get("cross_attention_dim") or 0)
        raise CharframeError(
            f"{path}: looks like {_family_label(width, bool(config.get('addition_embed_type')))} ControlNet (text context {width} wide, the base model's "
            f"{want}: it is an {fam.name} model); {hint(fam)}"
        )
    cls = ControlNetUnionModel if union else ControlNetModel
    variant = _weights_variant(path, fam)
    try:
        return cls.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype, variant=variant).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CharframeError(f"{path}: cannot load this ControlNet folder ({first}); {hint(fam)}") from exc


WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _weights_variant(path: Path, fam: Family) -> str | None:
    """None when the folder has plain weights, "fp16" (or another variant) when it has only
    `diffusion_pytorch_model.<variant>.safetensors`, as many downloaded ControlNet folders do."""
    if any((path / name).is_file() for name in WEIGHT_NAMES):
        return None
    variants = sorted(p.name.split(".")[1] for p in path.glob("diffusion_pytorch_model.*.safetensors")
                      if len(p.name.split(".")) == 3)
    if not variants:
        raise CharframeError(f"{path}: no ControlNet weights in this folder (diffusion_pytorch_model.safetensors or "
                             f"diffusion_pytorch_model.fp16.safetensors); {hint(fam)}")
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
            raise CharframeError(f"{path}: ControlNet model not found; {hint(of_unet_config(unet_config))}")
        if path.is_dir():
            model, info = load_controlnet_folder(path, unet_config, dtype), ControlNetInfo(path.name, "", "diffusers")
        else:
            model = load_controlnet_file(path, unet_config, dtype)
            info = ControlNetInfo(path.stem, model_file_hashes(path)[0], "single_file")
    return place(model, device, dtype).eval(), info
