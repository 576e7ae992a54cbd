"""The tiny SD model used across the tests: real SD1.x layout, deterministic, runs a pipeline."""

from pathlib import Path

import torch

from charframe.models.tiny import build_tiny_sd
from charframe.testing.tiny_files import save_tiny_sd


def test_tiny_model_has_sd1_layout_and_is_deterministic() -> None:
    a = build_tiny_sd(seed=3)
    b = build_tiny_sd(seed=3)
    names = dict(a.unet.named_modules())
    # real SD1.x module names the LoRA key map relies on
    for name in (
        "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k",
        "down_blocks.3.resnets.1.conv2",
        "mid_block.attentions.0.proj_in",
        "up_blocks.0.resnets.2.conv1",
        "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2",
        "down_blocks.2.downsamplers.0.conv",
        "up_blocks.2.upsamplers.0.conv",
    ):
        assert name in names, name
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ids = a.tokenizer("krnk, white background, from above").input_ids
    # bos, krnk, ",", white, background, ",", from, above, eos: whole words are single tokens
    assert len(ids) == 9
    assert a.tokenizer.convert_ids_to_tokens(ids)[1:4] == ["krnk</w>", ",</w>", "white</w>"]


def test_tiny_pipeline_generates_and_reloads(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    comps = build_tiny_sd(seed=0)
    pipe = comps.pipeline()
    out = pipe("krnk", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3)
    folder = save_tiny_sd(tmp_path / "tiny", seed=0)
    again = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    k = "down_blocks.0.resnets.0.conv1.weight"
    assert torch.equal(again.unet.state_dict()[k], comps.unet.state_dict()[k])
