"""Caption → CLIP conditioning as sd-scripts computes it: clip skip and the 150/225-token modes.

CLIP reads 75 tokens (+BOS/EOS). With `max_token_length` 150 or 225 a caption is cut into 75-token
chunks, each encoded as its own `<BOS> chunk <EOS>`, and the chunk outputs are joined back into one
`<BOS> … <EOS>` sequence (1 + 75·n + 1 states). Clip skip N takes the N-th hidden state from the end
and applies the final layer norm, like the WebUI and sd-scripts.
"""

from __future__ import annotations

from typing import Any

import torch

from charframe.models.clip import clip_states

CHUNK = 75  # tokens per CLIP window, without BOS/EOS


def tokenize(tokenizer: Any, captions: list[str], max_token_length: int | None = None) -> torch.Tensor:
    """Token ids shaped (batch, chunks, 77)."""
    total = (max_token_length or CHUNK) + 2
    ids = tokenizer(captions, padding="max_length", truncation=True, max_length=total, return_tensors="pt").input_ids
    if total == CHUNK + 2:
        return ids.unsqueeze(1)
    chunks = [
        torch.cat([ids[:, :1], ids[:, i : i + CHUNK], ids[:, -1:]], dim=1) for i in range(1, total - CHUNK, CHUNK)
    ]
    return torch.stack(chunks, dim=1)


def token_count(tokenizer: Any, caption: str) -> int:
    """Tokens of a caption without BOS/EOS (to warn about truncation)."""
    return len(tokenizer(caption, truncation=False).input_ids) - 2


def encode(text_encoder: Any, input_ids: torch.Tensor, clip_skip: int | None = None) -> torch.Tensor:
    """Hidden states (batch, 77 or 2 + 75·chunks, width) for `tokenize`'s ids."""
    b, n, length = input_ids.shape
    flat = input_ids.reshape(b * n, length).to(text_encoder.device)
    states = clip_states(text_encoder, flat, clip_skip)
    states = states.reshape(b, n * length, states.shape[-1])
    if n == 1:
        return states
    parts = [states[:, :1]] + [states[:, i : i + CHUNK] for i in range(1, n * length, length)] + [states[:, -1:]]
    return torch.cat(parts, dim=1)
