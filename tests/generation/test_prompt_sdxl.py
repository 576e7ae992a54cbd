"""SDXL prompt conditioning with WebUI's semantics, checked against the encoders themselves on the tiny SDXL model,
and the size ids of each pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from charframe.generation.denoiser import CondSchedule
from charframe.generation.families import both_passes, encode_prompts
from charframe.generation.passes import PassSettings
from charframe.generation.prompt import chunk_tokens
from charframe.generation.samplers import find_sampler
from charframe.generation.schedules import ZTSNR_LAST, ModelSchedule, alphas_cumprod
from charframe.generation.sdxl import PenultimateStates, SDXLRunner, XLDenoiser, encode_pair_xl, encode_xl, time_ids
from charframe.models.controlnet import build_tiny_controlnet
from charframe.models.tiny import TINY_SDXL_UNET, build_tiny_sdxl


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
    runner = SDXLRunner(xl, [build_tiny_controlnet(0, TINY_SDXL_UNET)], "Euler")
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


def test_one_text_encoding_matches_the_pair_and_an_empty_negative_is_zeros(xl) -> None:
    """`encode_xl` (what the sampling loop schedules) is `encode_pair_xl`'s positive when both have one chunk; an
    empty negative becomes zeros (states and pooled) in both passes, a non-empty one is kept."""
    pos, _ = encode_pair_xl("1girl, (cat ears:1.2)", "lowres", xl)
    one = encode_xl("1girl, (cat ears:1.2)", xl)
    torch.testing.assert_close(one.states, pos.states)
    torch.testing.assert_close(one.pooled, pos.pooled)
    conds = both_passes(xl, "1girl", "", find_sampler("Euler a"), 2, 2, lambda t: encode_xl(t, xl))
    for pair in (conds.first, conds.hires):
        neg = pair[1].at(0)
        assert not neg.states.any() and not neg.pooled.any() and pair[0].at(0).states.any()
    kept = both_passes(xl, "1girl", "lowres", find_sampler("Euler a"), 2, 0, lambda t: encode_xl(t, xl))
    torch.testing.assert_close(kept.first[1].at(0).states, encode_xl("lowres", xl).states)


def test_v_prediction_output_becomes_noise(xl) -> None:
    """A v-prediction model's output v at VP latent x and timestep t is turned into ε = √ᾱ·v + √(1-ᾱ)·x, ᾱ from
    the schedule at t (so the samplers, written for ε, run v-pred models as WebUI does)."""
    runner = SDXLRunner(xl, [], "Euler")
    cond = encode_xl("1girl", xl)
    den = XLDenoiser(xl.unet, [], CondSchedule.fixed(cond), CondSchedule.fixed(cond), 5.0, runner.schedule, 2,
                     ids=time_ids(16, 16), modes=[], v_pred=True)
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((1,), 500.0)
    with torch.no_grad():
        v = xl.unet(x, t, encoder_hidden_states=cond.states, return_dict=False, added_cond_kwargs={
            "text_embeds": cond.pooled, "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])})[0]
        eps = den._unet_xl(x, t, cond)
    a = float(runner.schedule.alphas_cumprod[500])
    torch.testing.assert_close(eps, a ** 0.5 * v + (1 - a) ** 0.5 * x, atol=1e-5, rtol=1e-5)


def test_zero_terminal_snr_schedule_matches_diffusers_but_the_last_step() -> None:
    """A `rescale_betas_zero_snr` model's ᾱ: diffusers' rescaled schedule at every step but the last, which is
    WebUI's 4.8973451890853435e-08 (not 0, so sigma_max stays finite); SD's plain schedule is unchanged."""
    from diffusers import EulerDiscreteScheduler

    config = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ours = alphas_cumprod(config | {"rescale_betas_zero_snr": True})
    ref = EulerDiscreteScheduler(**config, rescale_betas_zero_snr=True).alphas_cumprod.numpy()
    np.testing.assert_allclose(ours[:-1], ref[:-1], rtol=2e-4, atol=1e-7)
    assert ours[-1] == np.float32(ZTSNR_LAST) and ref[-1] < 1e-6
    np.testing.assert_allclose(alphas_cumprod(config), EulerDiscreteScheduler(**config).alphas_cumprod.numpy(),
                               rtol=1e-5)
    assert np.isfinite(ModelSchedule(ours).sigma_max)
