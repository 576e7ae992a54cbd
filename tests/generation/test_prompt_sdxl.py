"""SDXL prompt conditioning with WebUI's semantics, checked against the encoders themselves on the tiny SDXL model,
and the size ids of each pass."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from charframe.generation.families import encode_prompts
from charframe.generation.passes import PassSettings
from charframe.generation.prompt import chunk_tokens
from charframe.generation.sdxl import PenultimateStates, SDXLRunner, encode_pair_xl
from charframe.models.controlnet import build_tiny_controlnet
from charframe.models.tiny import TINY_SDXL_UNET, build_tiny_sdxl
from diffusers import EulerDiscreteScheduler


@pytest.fixture(scope="module")
def xl():
    return build_tiny_sdxl(0)


def _ids(text: str, tokenizer) -> torch.Tensor:
    return torch.tensor([c.tokens for c in chunk_tokens(text, tokenizer)])


def test_unweighted_prompt_is_both_penultimate_states_and_the_projected_pool(xl) -> None:
    """No emphasis: the states are CLIP-L's and OpenCLIP's penultimate hidden states side by side (no final layer
    norm), OpenCLIP reading pad tokens (id 0) after its first end token; pooled = OpenCLIP's projected state at
    that end token (transformers' own `text_embeds`)."""
    text = "1girl, solo, short black hair"
    pos, neg = encode_pair_xl(text, "lowres", xl)
    ids1 = _ids(text, xl.tokenizer)
    ids2 = ids1.clone()
    end = int((ids2[0] == xl.tokenizer_2.eos_token_id).nonzero()[0])
    ids2[0, end + 1:] = xl.tokenizer_2.pad_token_id
    assert xl.tokenizer_2.pad_token_id == 0 and ids2[0, -1] == 0 and ids2[0, end] == xl.tokenizer_2.eos_token_id
    with torch.no_grad():
        one = xl.text_encoder(ids1, output_hidden_states=True)
        two = xl.text_encoder_2(ids2, output_hidden_states=True)
    torch.testing.assert_close(pos.states, torch.cat([one.hidden_states[-2], two.hidden_states[-2]], dim=-1))
    torch.testing.assert_close(pos.pooled, two.text_embeds)
    assert pos.states.shape == (1, 77, 32 + 64) and neg.states.shape == pos.states.shape
    assert not torch.equal(pos.states, neg.states)


def test_emphasis_empty_negative_clip_skip_and_long_prompts(xl) -> None:
    """Emphasis changes both encoders' states but not the pooled embedding (taken before it); an empty negative is
    zeros (WebUI's force_zero_embeddings); clip skip does not apply to SDXL; a prompt of two chunks is 154 tokens
    long, pooled from its first chunk, padded to the same length as its negative."""
    plain = encode_pair_xl("1girl, cat ears", "", xl)[0]
    weighted, empty = encode_pair_xl("1girl, (cat ears:1.4)", "", xl)
    assert not torch.equal(plain.states[..., :32], weighted.states[..., :32])
    assert not torch.equal(plain.states[..., 32:], weighted.states[..., 32:])
    torch.testing.assert_close(plain.pooled, weighted.pooled)
    assert torch.count_nonzero(empty.states) == 0 and torch.count_nonzero(empty.pooled) == 0
    skip2 = encode_prompts(xl, "1girl, cat ears", "", clip_skip=2)[0]
    assert torch.equal(skip2.states, plain.states)
    long_text = ", ".join(["white background"] * 40)
    long, neg = encode_pair_xl(long_text, "lowres", xl)
    assert long.states.shape[1] == 154 and neg.states.shape[1] == 154
    first_chunk = chunk_tokens(long_text, xl.tokenizer)[0].tokens
    first = PenultimateStates(xl.text_encoder_2, xl.tokenizer_2, pooled=True)
    with torch.no_grad():
        first(torch.tensor([first_chunk]))
    torch.testing.assert_close(long.pooled, first.pooled[0])


def test_each_pass_is_conditioned_on_its_own_size(xl) -> None:
    """original size = target size = the pass's (height, width), crop (0, 0): 64×48 first, 96×72 in hires."""
    runner = SDXLRunner(xl, [build_tiny_controlnet(0, TINY_SDXL_UNET)],
                        EulerDiscreteScheduler.from_config(xl.noise_scheduler.config))
    seen = []
    forward = xl.unet.forward

    def spy(*a, **k):
        seen.append(tuple(k["added_cond_kwargs"]["time_ids"][0].tolist()))
        return forward(*a, **k)

    xl.unet.forward = spy
    try:
        pos, neg = encode_pair_xl("1girl", "lowres", xl)
        control = Image.new("RGB", (48, 64), (0, 0, 0))
        image = runner.image(pos, neg, [control], 1, PassSettings(2, 5.0, (0.5,), (0.0,), (1.0,), 1.5, 0.5, 2))
    finally:
        xl.unet.forward = forward
    assert image.size == (72, 96)
    assert set(seen) == {(64.0, 48.0, 0.0, 0.0, 64.0, 48.0), (96.0, 72.0, 0.0, 0.0, 96.0, 72.0)}
