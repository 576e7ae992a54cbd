"""SDXL's conditioning as sd-scripts' `sdxl_train_network.py` computes it: both text encoders, the pooled text
embedding and the size/crop time ids.

- CLIP-L: the penultimate hidden state (`hidden_states[11]` of 12 layers), no final layer norm;
- OpenCLIP-G: the penultimate hidden state, no final layer norm; pooled = its final (normed) state at the first
  end-of-text token, through `text_projection` (sd-scripts' "pool workaround", independent of the config's
  `eos_token_id`);
- the UNet reads the two states side by side (768 + 1280 = 2048 wide) and `added_cond_kwargs` = the pooled
  embedding and the six time ids of `families.sdxl.time_ids`. Clip skip does not apply (sd-scripts ignores it).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from charframe.families.sdxl import time_ids
from charframe.training.text import tokenize


def pooled_output(text_encoder_2: Any, last_hidden: torch.Tensor, input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """The projected state at each row's first end-of-text token."""
    index = (input_ids.to(last_hidden.device) == eos_id).int().argmax(dim=-1)
    pooled = last_hidden[torch.arange(last_hidden.shape[0], device=last_hidden.device), index]
    projection = text_encoder_2.text_projection
    return projection(pooled.to(projection.weight.dtype)).to(last_hidden.dtype)


def sdxl_text(comps: Any, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(states (B, 77, width 1 + width 2), pooled (B, projection)) for 75-token captions."""
    ids1 = tokenize(comps.tokenizer, list(captions))[:, 0].to(comps.text_encoder.device)
    ids2 = tokenize(comps.tokenizer_2, list(captions))[:, 0].to(comps.text_encoder_2.device)
    out1 = comps.text_encoder(ids1, output_hidden_states=True, return_dict=True)
    out2 = comps.text_encoder_2(ids2, output_hidden_states=True, return_dict=True)
    pooled = pooled_output(comps.text_encoder_2, out2.last_hidden_state, ids2, comps.tokenizer_2.eos_token_id)
    states = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2].to(out1.hidden_states[-2].device)], dim=-1)
    return states, pooled


def sdxl_time_ids(sizes: Sequence[tuple[int, int, bool]], bucket: tuple[int, int]) -> torch.Tensor:
    """(B, 6) time ids for images of file sizes (w, h, flipped) trained in `bucket` (w, h)."""
    return torch.tensor([time_ids((w, h), bucket, flipped) for w, h, flipped in sizes], dtype=torch.float32)
