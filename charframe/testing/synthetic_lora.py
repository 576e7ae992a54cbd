"""Synthetic LoRA files on real SD1.x and SDXL module names, for tests, benchmarks and demos (no downloads).

`kohya_targets` lists the layers sd-scripts' LoRA adapts (attention/linear and 1x1 conv inside the
transformer blocks, the text encoder's attention and MLP, and with conv_dim also the resnet,
downsampler and upsampler convs) under the names it writes, with their weight shapes. `random_network` fills them with
random factors of any supported kind, with a decaying singular-value profile like trained LoRAs.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from charframe.lora.keys import UNET_PREFIX
from charframe.models.single_file import empty_encoders, family_config, sd15_config
from charframe.lora.targets import kohya_targets as trained_layers


def kohya_targets(unet: torch.nn.Module, text_encoder: Any, conv3x3: bool = True) -> dict[str, tuple[int, ...]]:
    """{kohya module name: layer weight shape} for a UNet (+ its text encoder, or SDXL's list of two), UNet first.

    The names come from the trainer's `kohya_targets`, the one place that knows sd-scripts' rule
    (text-encoder names are `lora_te_text_model_encoder_layers_…` whatever the transformers version).
    """

    found = [(key, tuple(layer.weight.shape)) for key, layer, _ in trained_layers(unet, text_encoder, conv3x3)]
    return dict(sorted(found, key=lambda kv: not kv[0].startswith(UNET_PREFIX)))  # stable: keeps module order


def sd15_targets(conv3x3: bool = True) -> dict[str, tuple[int, ...]]:
    """Targets of a real-size SD1.5 model (the shipped configs), built on the meta device (no memory, no download)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = sd15_config()
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config.unet)
        te = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    return kohya_targets(unet, te, conv3x3)


def sdxl_targets(conv3x3: bool = True) -> dict[str, tuple[int, ...]]:
    """Targets of a real-size SDXL model (the shipped configs, both text encoders), on the meta device."""
    from diffusers import UNet2DConditionModel

    config = family_config("sdxl")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config.unet)
    encoders = empty_encoders(config)
    return kohya_targets(unet, [encoders["text_encoder"], encoders["text_encoder_2"]], conv3x3)


def _decay(rank: int, g: torch.Generator) -> torch.Tensor:
    """Per-module singular profile exp(-i/τ), τ in [5, 12]: trained LoRAs keep ~15–35 of 128 at sv_ratio 16."""
    tau = 5 + 7 * float(torch.rand(1, generator=g))
    return torch.exp(-torch.arange(rank, dtype=torch.float32) / tau)


def _factor_pair(n: int) -> tuple[int, int]:
    a = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
    return a, n // a


def random_module(
    shape: tuple[int, ...], rank: int, kind: str, g: torch.Generator, *, alpha: float | None = None, tucker: bool = False
) -> dict[str, torch.Tensor]:
    """Random factors of one module of `kind` ("lora", "loha", "lokr") for a layer of `shape`."""
    out_c, in_c, *k = shape
    k = tuple(k)
    flat_in = in_c * math.prod(k)
    rn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t: dict[str, torch.Tensor]
    if kind == "lora":
        down = rn(rank, flat_in) / math.sqrt(flat_in)
        up = rn(out_c, rank) * _decay(rank, g) / math.sqrt(rank)
        if tucker and k and k != (1, 1):
            t = {"lora_down.weight": rn(rank, in_c, 1, 1) / math.sqrt(in_c), "lora_mid.weight": rn(rank, rank, *k) / rank,
                 "lora_up.weight": up.reshape(out_c, rank, 1, 1)}  # fmt: skip
        else:
            t = {"lora_down.weight": down.reshape(rank, in_c, *k), "lora_up.weight": up.reshape(out_c, rank, *([1, 1] if k else []))}
    elif kind == "loha":
        if tucker and k and k != (1, 1):
            t = {f"hada_w{i}_a": rn(rank, out_c) for i in (1, 2)} | {f"hada_w{i}_b": rn(rank, in_c) / in_c for i in (1, 2)}
            t |= {"hada_t1": rn(rank, rank, *k) / rank, "hada_t2": rn(rank, rank, *k) / rank}
        else:
            t = {f"hada_w{i}_a": rn(out_c, rank) for i in (1, 2)} | {f"hada_w{i}_b": rn(rank, flat_in) / flat_in for i in (1, 2)}
    elif kind == "lokr":
        a, c = _factor_pair(out_c)
        b, d = _factor_pair(in_c)
        t = {"lokr_w1_a": rn(a, rank), "lokr_w1_b": rn(rank, b)} if tucker else {"lokr_w1": rn(a, b)}
        if tucker and k and k != (1, 1):
            t |= {"lokr_t2": rn(rank, rank, *k) / rank, "lokr_w2_a": rn(rank, c), "lokr_w2_b": rn(rank, d) / d}
        else:
            t |= {"lokr_w2_a": rn(c, rank), "lokr_w2_b": rn(rank, d, *k) / (d * math.prod(k))}
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if alpha is not None:
        t["alpha"] = torch.tensor(float(alpha))
    return t


def random_network(
    targets: dict[str, tuple[int, ...]],
    rank: int = 8,
    kind: str = "lora",
    *,
    alpha: float | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    tucker: bool = False,
) -> dict[str, torch.Tensor]:
    """A flat kohya state dict with random modules on every target (alpha defaults to rank/2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in targets.items():
        r = min(rank, shape[0], math.prod(shape[1:]))
        a = r / 2 if alpha is None else alpha
        for key, value in random_module(shape, r, kind, g, alpha=a, tucker=tucker).items():
            out[f"{name}.{key}"] = value.to(dtype)
    return out
