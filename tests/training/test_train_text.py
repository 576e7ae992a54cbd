"""Captions → CLIP conditioning equal to sd-scripts' own, recorded from its checkout.

`data/sd_scripts_text.safetensors` holds the token ids and encoder states that sd-scripts 48d368fa's
`SdTokenizeStrategy` and `SdTextEncodingStrategy` produced (transformers 4.54) for `text_parity.CAPTIONS`
in the 75/150/225-token modes with clip skip 1 and 2, on `text_parity.small_clip()` saved from this
venv and loaded there, with charframe's tokenizer (sd-scripts loaded it through --tokenizer_cache_dir).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from charframe.models.tokenizer import clip_tokenizer
from charframe.training.text import encode, tokenize
from text_parity import CAPTIONS, CLIP_SKIPS, MODES, small_clip

REF = load_file(str(Path(__file__).parents[1] / "data" / "sd_scripts_text.safetensors"))


@pytest.fixture(scope="module")
def te():
    return small_clip()


@pytest.mark.parametrize("mode", MODES)
def test_token_ids_equal_sd_scripts(mode) -> None:
    assert torch.equal(tokenize(clip_tokenizer(), CAPTIONS, mode), REF[f"ids_{mode}"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("clip_skip", CLIP_SKIPS)
def test_encoder_states_equal_sd_scripts(te, mode, clip_skip) -> None:
    with torch.no_grad():
        states = encode(te, tokenize(clip_tokenizer(), CAPTIONS, mode), clip_skip)
    want = REF[f"states_{mode}_{clip_skip}"]
    assert states.shape == want.shape
    torch.testing.assert_close(states, want, atol=1e-5, rtol=1e-5)
