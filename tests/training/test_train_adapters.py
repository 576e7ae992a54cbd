"""LoRA/LyCORIS modules on the tiny SD1.x model: exactly the key names sd-scripts and LyCORIS write."""

import gzip
import json
from pathlib import Path

import pytest
import torch

from charframe.models.tiny import build_tiny_sd
from charframe.training.adapters import (
    NetworkSpec, attach_lora, create_network, load_network_weights, network_state_dict, remove_network,
)
from charframe.lora.targets import kohya_targets
from train_data import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def comps():
    return build_tiny_sd(seed=0)


def _modules(net) -> set[str]:
    return {k.split(".")[0] for k in net.state_dict()}


# Counts for the tiny model (real SD1.x layout): 16 transformer blocks x 12 linear/1x1 layers;
# plus, with conv, 22 resnets (conv1, conv2, time_emb_proj; 13 with conv_shortcut) and 6 down/upsamplers.
UNET_LINEAR = 16 * 12
UNET_CONV = UNET_LINEAR + 22 * 3 + 13 + 6
TE = 4 * 6  # 4 CLIP layers x (q, k, v, out_proj, fc1, fc2)

LINEAR_NAMES = {
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0",
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
    "lora_unet_up_blocks_1_attentions_0_proj_out",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te_text_model_encoder_layers_3_mlp_fc2",
}
CONV_NAMES = {
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_unet_down_blocks_0_resnets_0_time_emb_proj",
    "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
    "lora_unet_down_blocks_2_downsamplers_0_conv",
    "lora_unet_mid_block_resnets_1_conv2",
    "lora_unet_up_blocks_0_upsamplers_0_conv",
    "lora_unet_up_blocks_3_resnets_2_conv2",
}


def test_lora1x1_keys(comps) -> None:
    net = create_network(NetworkSpec(4, 2), comps.unet, comps.text_encoder)
    try:
        names = _modules(net)
        assert LINEAR_NAMES <= names and not (CONV_NAMES & names)
        assert len(net.unet_loras) == UNET_LINEAR and len(net.text_encoder_loras) == TE
        sd = network_state_dict(net, torch.float16)
        assert set(sd) == {f"{n}.{s}" for n in names for s in ("lora_down.weight", "lora_up.weight", "alpha")}
        assert float(sd["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"]) == 2.0
        assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape == (4, 16, 1, 1)
    finally:
        remove_network(net)


@pytest.mark.parametrize("algo", [None, "lora", "loha"])
def test_conv_networks_share_the_sd_scripts_module_set(comps, algo) -> None:
    """Lora3x3 (kohya), Locon and Loha (LyCORIS) wrap exactly the same layers under the same names."""
    net = create_network(NetworkSpec(4, 2, 8, 3, algo), comps.unet, comps.text_encoder)
    try:
        names = _modules(net)
        assert LINEAR_NAMES | CONV_NAMES <= names
        assert len(names) == UNET_CONV + TE
        sd = net.state_dict()
        suffixes = {k.split(".", 1)[1] for k in sd}
        if algo == "loha":
            assert suffixes == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}
        else:
            assert suffixes == {"lora_down.weight", "lora_up.weight", "alpha"}
            down = sd["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
            assert down.shape == (8, 16, 3, 3)  # conv_dim on the 3x3 convs
            assert sd["lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight"].shape[0] == 4
        assert float(sd["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 3.0
        assert float(sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"]) == 2.0
    finally:
        remove_network(net)


def test_text_encoder_names_do_not_depend_on_transformers_version(comps) -> None:
    """transformers 5 has no `text_model.` level; older releases (and sd-scripts' CLIP) do."""

    class OldCLIP(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.text_model = inner

    new = [k for k, _, _ in kohya_targets(comps.unet, comps.text_encoder, False) if k.startswith("lora_te")]
    old = [k for k, _, _ in kohya_targets(comps.unet, OldCLIP(comps.text_encoder), False) if k.startswith("lora_te")]
    assert new == old and new[0].startswith("lora_te_text_model_encoder_layers_0_")


def test_network_starts_as_identity_and_restores(comps) -> None:
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500])
    states = torch.randn(1, 77, 32)
    with torch.no_grad():
        base = comps.unet(x, t, states).sample
        net = create_network(NetworkSpec(4, 2, 4, 2), comps.unet, comps.text_encoder)
        assert torch.equal(comps.unet(x, t, states).sample, base)  # lora_up starts at zero
        for m in net.unet_loras:
            torch.nn.init.normal_(m.lora_up.weight, std=0.1)
        assert not torch.allclose(comps.unet(x, t, states).sample, base)
        remove_network(net)
        assert torch.equal(comps.unet(x, t, states).sample, base)


def test_lycoris_does_not_warn_about_the_other_transformers_attention_name(comps) -> None:
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    lg = logging.getLogger("LyCORIS")
    lg.addHandler(handler)
    try:
        net = create_network(NetworkSpec(2, 1, 2, 1, "loha"), comps.unet, comps.text_encoder)
        remove_network(net)
    finally:
        lg.removeHandler(handler)
    assert not [m for m in seen if "No modules matched" in m]
    from charframe.training.adapters import _AlternativeClassFilter

    def passes(classes: str) -> bool:
        msg = f"Text Encoder: No modules matched the following target module classes: {classes}"
        return _AlternativeClassFilter().filter(logging.LogRecord("LyCORIS", logging.WARNING, "", 0, msg, None, None))

    assert not passes("['CLIPSdpaAttention']") and not passes("['CLIPAttention']")
    assert passes("['CLIPMLP']") and passes("['CLIPAttention', 'CLIPSdpaAttention']")  # real misses still warn


def test_continue_loads_every_tensor_and_reports_only_what_the_file_lacks(comps, caplog) -> None:
    """--continue: a complete file (ours or sd-scripts', same keys) loads with nothing reported missing;
    the run keeps its own alpha; a file without a module reports exactly that module's tensors."""
    spec = NetworkSpec(4, 2, 4, 2)
    net = create_network(spec, comps.unet, comps.text_encoder)
    try:
        saved = {k: torch.randn_like(v) if not k.endswith(".alpha") else v.clone() for k, v in network_state_dict(net).items()}
        assert load_network_weights(net, saved, "full.safetensors") == []
        assert "start fresh" not in caplog.text
        assert all(torch.equal(v, saved[k].to(v.dtype)) for k, v in net.state_dict().items())
        name = "lora_unet_mid_block_attentions_0_proj_in"
        partial = {k: v for k, v in saved.items() if not k.startswith(name + ".")}
        assert load_network_weights(net, partial, "part.safetensors") == sorted(k for k in saved if k.startswith(name + "."))
    finally:
        remove_network(net)


def test_attach_matches_the_trained_network(comps) -> None:
    """A file written from a network and attached again reproduces the network's output."""
    x, t, states = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.randn(1, 77, 32)
    for spec in (NetworkSpec(4, 2, 4, 1), NetworkSpec(4, 2, 4, 1, "loha")):
        torch.manual_seed(0)
        net = create_network(spec, comps.unet, comps.text_encoder)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
            want = comps.unet(x, t, states).sample
        tensors = network_state_dict(net)
        remove_network(net)
        again = attach_lora(comps.unet, comps.text_encoder, tensors)
        with torch.no_grad():
            got = comps.unet(x, t, states).sample
        remove_network(again)
        assert torch.allclose(got, want, atol=1e-5), spec


# sd-scripts' own files, recorded by `python benchmarks/kohya.py --golden ...` (sd-scripts 48d368fa with
# transformers 4.54 and LyCORIS 4.1.3, on a random SD1.5-shaped checkpoint, dim 8): every tensor key and shape.
GOLDEN = Path(__file__).parents[1] / "data" / "sd_scripts_sd15_keys.json.gz"


@pytest.fixture(scope="module")
def sd15_on_meta():
    """SD1.5's real UNet and CLIP text encoder, shapes only (no memory, no weights)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from charframe.models.single_file import sd15_config

    cfg = sd15_config()
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg.unet)
        te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in cfg.text_encoder.items() if not k.startswith("_")}))
    return unet, te


@pytest.mark.parametrize("logic", ["Lora1x1A50p-AdamW8", "Lora3x3A50p-AdamW8", "LoconA50p-AdamW8", "LohaA50p-AdamW8"])
def test_sd15_keys_and_shapes_equal_sd_scripts_own_file(logic, sd15_on_meta) -> None:
    from charframe.training.plan import make_plan

    golden = json.loads(gzip.decompress(GOLDEN.read_bytes()))["keys"][logic]
    unet, te = sd15_on_meta
    spec = NetworkSpec.from_recipe(make_plan(logic, 8, 100, 1, dataset="d.toml", out="x").network)
    net = create_network(spec, unet, te)  # the LoRA factors are small real tensors; the base stays on meta
    try:
        ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    finally:
        remove_network(net)
    assert len(ours) == len(golden)
    assert ours == golden
