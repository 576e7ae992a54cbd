"""Acceptance: a LoRA written by charframe (after merge and compress) loads in diffusers and changes the
UNet (and text encoder) output exactly as merging its ΔW into a copy of the weights by hand does.

Facts checked here about diffusers' kohya converter (0.42): it accepts `lora_down`/`lora_up`/`alpha` on
attention, proj_in/out, ff, resnet conv1/conv2 (3x3 conv LoRA), conv_shortcut, time_emb_proj,
down/upsampler convs and the text encoder; it rejects LyCORIS `lora_mid` (Tucker), `hada_*` and `lokr_*`
keys, which is why compress writes plain LoRA.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from charframe.lora import io as lio
from charframe.lora.blocks import expand_weights
from charframe.lora.ops.compress import compress_file
from charframe.lora.functional import RankRule
from charframe.lora.ops.merge import merge_file
from charframe.testing.synthetic_lora import kohya_targets, random_network
from charframe.models.tiny import build_tiny_sd

import peft  # noqa: E402,F401  (the [test] extra: diffusers' load_lora_weights needs it)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sd(seed=0)


def _by_hand(unet, te, path):
    """Copies of unet/te with W += (alpha/r)·up·down for every module of the file (plain torch)."""
    unet, te = copy.deepcopy(unet), copy.deepcopy(te)
    layers = {"lora_unet_" + n.replace(".", "_"): m for n, m in unet.named_modules()}
    layers |= {"lora_te_" + ("" if n.startswith("text_model") else "text_model_") + n.replace(".", "_"): m for n, m in te.named_modules()}
    sd = load_file(str(path))
    names = {k.split(".")[0] for k in sd}
    with torch.no_grad():
        for name in names:
            up, down = sd[f"{name}.lora_up.weight"].float(), sd[f"{name}.lora_down.weight"].float()
            r = down.shape[0]
            delta = up.reshape(up.shape[0], -1) @ down.reshape(r, -1) * (float(sd[f"{name}.alpha"]) / r)
            w = layers[name].weight
            w += delta.reshape(w.shape)
    return unet, te, names


def _outputs(unet, te, ids, x, t):
    with torch.no_grad():
        enc = te(ids)[0]
        return enc, unet(x, t, enc).sample


def test_charframe_lora_loads_in_diffusers_exactly(tiny, tmp_path):
    targets = kohya_targets(tiny.unet, tiny.text_encoder, conv3x3=True)
    assert any(n.startswith("lora_te_text_model_encoder_layers_") for n in targets)
    assert any(n.endswith("_conv1") for n in targets) and any("downsamplers" in n for n in targets)
    src = lio.save_lora_file(
        tmp_path / "krnk.safetensors",
        random_network(targets, 8, "lora", dtype=torch.float16, seed=3),
        {"ss_network_dim": "8", "ss_network_alpha": "4"},
    )
    weights = expand_weights([0.5, 1, 0, 1, 0.25, 1, 1, -0.5, 1, 1, 0, 1, 1, 1, 1, 0.75, 1])
    merged = merge_file(src, weights, "mine").output
    final = compress_file(merged, RankRule("sv_ratio", 4)).output
    assert final.name == "krnk-mine-SvR4.safetensors"

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (1, 77), generator=g)
    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500])
    base_enc, base_out = _outputs(tiny.unet, tiny.text_encoder, ids, x, t)
    unet_ref, te_ref, names = _by_hand(tiny.unet, tiny.text_encoder, final)
    assert any(n.endswith("_conv2") for n in names) and any(n.startswith("lora_te_") for n in names)
    ref_enc, _ = _outputs(unet_ref, te_ref, ids, x, t)
    ref_out = unet_ref(x, t, base_enc).sample.detach()

    pipe = copy.deepcopy(tiny).pipeline()
    pipe.load_lora_weights(str(final))
    got_enc, _ = _outputs(pipe.unet, pipe.text_encoder, ids, x, t)
    with torch.no_grad():
        got_out = pipe.unet(x, t, base_enc).sample

    assert float((ref_out - base_out).abs().max()) > 1e-2  # the LoRA really changes the UNet
    assert float((ref_enc - base_enc).abs().max()) > 1e-2  # …and the text encoder
    torch.testing.assert_close(got_out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_enc, ref_enc, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind, tucker", [("lora", True), ("loha", False), ("lokr", False)])
def test_diffusers_rejects_lycoris_keys_that_compress_converts(tiny, tmp_path, kind, tucker):
    targets = {k: v for k, v in kohya_targets(tiny.unet, None).items() if "mid_block" in k}
    src = lio.save_lora_file(tmp_path / "ly.safetensors", random_network(targets, 4, kind, tucker=tucker), {})
    with pytest.raises(ValueError, match="not been correctly renamed"):
        copy.deepcopy(tiny).pipeline().load_lora_weights(str(src))
    out = compress_file(src, RankRule("all", 0, None), dtype="fp32").output
    copy.deepcopy(tiny).pipeline().load_lora_weights(str(out))  # plain LoRA after compress: loads
