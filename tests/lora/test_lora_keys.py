"""The kohya name contract: trainer names, the block of a module, flat conv shapes from a name."""

from __future__ import annotations

import pytest
import torch

from charframe.lora import keys as K
from charframe.lora.targets import kohya_targets


@pytest.mark.parametrize(
    "name, block",
    [
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", "BASE"),
        ("lora_te1_text_model_encoder_layers_11_mlp_fc2", "BASE"),
        ("lora_te2_text_model_encoder_layers_3_mlp_fc1", "BASE"),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "IN01"),
        ("lora_unet_down_blocks_0_resnets_1_conv2", "IN02"),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", "IN03"),
        ("lora_unet_down_blocks_1_attentions_0_proj_in", "IN04"),
        ("lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_ff_net_2", "IN08"),
        ("lora_unet_down_blocks_2_downsamplers_0_conv", "IN09"),
        ("lora_unet_down_blocks_3_resnets_0_conv1", "IN10"),
        ("lora_unet_down_blocks_3_resnets_1_time_emb_proj", "IN11"),
        ("lora_unet_mid_block_attentions_0_proj_out", "M00"),
        ("lora_unet_mid_block_resnets_1_conv2", "M00"),
        ("lora_unet_up_blocks_0_resnets_0_conv1", "OUT00"),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", "OUT02"),
        ("lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", "OUT03"),
        ("lora_unet_up_blocks_1_upsamplers_0_conv", "OUT05"),
        ("lora_unet_up_blocks_3_resnets_2_conv1", "OUT11"),
        ("lora_unet_up_blocks_3_attentions_2_proj_out", "OUT11"),
        # old LDM-style names
        ("lora_unet_input_blocks_4_1_proj_in", "IN04"),
        ("lora_unet_input_blocks_0_0", "IN00"),
        ("lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q", "M00"),
        ("lora_unet_output_blocks_11_1_proj_out", "OUT11"),
        # outside every block
        ("lora_unet_conv_in", None),
        ("lora_unet_time_embedding_linear_1", None),
        ("lora_unet_conv_out", None),
        ("lora_unet_input_blocks_12_0_x", None),
    ],
)
def test_block_of(name, block):
    assert K.block_of(name) == block


def test_layer_shape_for_flat_conv_updates():
    assert K.layer_shape("lora_unet_up_blocks_3_resnets_2_conv1", (8, 72)) == (8, 8, 3, 3)
    assert K.layer_shape("lora_unet_down_blocks_0_downsamplers_0_conv", (8, 72)) == (8, 8, 3, 3)
    assert K.layer_shape("lora_unet_down_blocks_0_attentions_0_proj_in", (8, 8)) == (8, 8, 1, 1)
    assert K.layer_shape("lora_unet_down_blocks_1_resnets_0_conv_shortcut", (8, 4)) == (8, 4, 1, 1)
    assert K.layer_shape("lora_unet_down_blocks_1_resnets_0_time_emb_proj", (8, 72)) == (8, 72)
    assert K.layer_shape("lora_te_text_model_encoder_layers_0_mlp_fc1", (8, 72)) == (8, 72)
    assert K.layer_shape("x", (8, 4, 3, 3)) == (8, 4, 3, 3)


def test_trainer_names_are_the_file_names_the_tools_read():
    """The trainer's key for a layer is the name the file tools group, block and shape."""
    from diffusers import UNet2DConditionModel

    assert K.kohya_name(K.UNET_PREFIX, "down_blocks.0.attentions.0.proj_in") == "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert K.split_key("lora_te_x_q_proj.lora_down.weight") == ("lora_te_x_q_proj", "lora_down.weight")
    with torch.device("meta"):
        unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)  # fmt: skip
    names = [key for key, _, _ in kohya_targets(unet, None, conv=True)]
    assert names and all(K.MODULE_NAME.match(n) and not K.is_text_encoder(n) for n in names)
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" in names
    assert K.block_of("lora_unet_down_blocks_0_attentions_0_proj_in") == "IN01"
