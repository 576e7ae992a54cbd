"""Caption → CLIP conditioning as sd-scripts computes it: clip skip and the 150/225-token modes.

CLIP reads 75 tokens (+BOS/EOS). With `max_token_length` 150 or 225 a caption is cut into 75-token
chunks, each encoded as its own `<BOS> chunk <EOS>`, and the chunk outputs are joined back into one
`<BOS> … <EOS>` sequence (1 + 75·n + 1 states). Clip skip N takes the N-th hidden state from the end
and applies the final layer norm, like the WebUI and sd-scripts.

With embeddings (pivotal tuning) a caption's trigger word is replaced by one position per vector (the name found
in its tokens as WebUI finds it, `models.embeddings.substitute`), then the caption is cut and chunked exactly as
above, like sd-scripts' textual-inversion training does with its placeholder tokens; `encode` puts the vectors
into CLIP's input at those positions (a vector beyond the token limit is cut with its position).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from charframe.models.clip import clip_states
from charframe.models.embeddings import EmbeddingSet, substitute, vectors_at

CHUNK = 75  # tokens per CLIP window, without BOS/EOS


@dataclass
class CaptionIds:
    """`tokenize_with`'s result: ids (batch, chunks, 77) and, per flattened row (b · chunks + c), the (position,
    vectors) of the embeddings in it."""

    ids: torch.Tensor
    vectors: list[list[tuple[int, Any]]] = field(default_factory=list)


def tokenize(tokenizer: Any, captions: list[str], max_token_length: int | None = None) -> torch.Tensor:
    """Token ids shaped (batch, chunks, 77)."""
    total = (max_token_length or CHUNK) + 2
    ids = tokenizer(captions, padding="max_length", truncation=True, max_length=total, return_tensors="pt").input_ids
    return _chunked(ids, total)


def tokenize_with(tokenizer: Any, captions: list[str], max_token_length: int | None,
                  embeddings: EmbeddingSet | None) -> CaptionIds:
    """`tokenize` with `embeddings` in place of their names (see the module doc); the same ids without a match."""
    total = (max_token_length or CHUNK) + 2
    body = tokenizer(captions, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, flat_fixes = [], []
    for caption_ids in body:
        ids, fixes = substitute(caption_ids, embeddings)
        ids = [bos, *ids[: total - 2], eos]
        rows.append(ids + [pad] * (total - len(ids)))
        flat_fixes.append(fixes)
    chunked = _chunked(torch.tensor(rows, dtype=torch.long), total)
    n = chunked.shape[1]
    vectors: list[list[tuple[int, Any]]] = [[] for _ in range(len(captions) * n)]
    for b, fixes in enumerate(flat_fixes):
        for offset, embedding in fixes:  # offset in the caption body: vector i sits at body position offset + i
            kept, i = min(embedding.count, total - 2 - offset), 0
            while i < kept:  # one run per chunk the vectors fall in
                c, pos = divmod(offset + i, CHUNK)
                run = min(kept - i, CHUNK - pos)
                vectors[b * n + c].append((pos + 1, embedding.vectors[i : i + run]))
                i += run
    return CaptionIds(chunked, vectors)


def _chunked(ids: torch.Tensor, total: int) -> torch.Tensor:
    """(batch, total) ids → (batch, chunks, 77) as sd-scripts splits its 150/225-token captions."""
    if total == CHUNK + 2:
        return ids.unsqueeze(1)
    chunks = [
        torch.cat([ids[:, :1], ids[:, i : i + CHUNK], ids[:, -1:]], dim=1) for i in range(1, total - CHUNK, CHUNK)
    ]
    return torch.stack(chunks, dim=1)


def token_count(tokenizer: Any, caption: str) -> int:
    """Tokens of a caption without BOS/EOS (to warn about truncation)."""
    return len(tokenizer(caption, truncation=False).input_ids) - 2


def encode(text_encoder: Any, input_ids: torch.Tensor | CaptionIds, clip_skip: int | None = None) -> torch.Tensor:
    """Hidden states (batch, 77 or 2 + 75·chunks, width) for `tokenize`'s (or `tokenize_with`'s) ids."""
    vectors = input_ids.vectors if isinstance(input_ids, CaptionIds) else []
    input_ids = input_ids.ids if isinstance(input_ids, CaptionIds) else input_ids
    b, n, length = input_ids.shape
    flat = input_ids.reshape(b * n, length).to(text_encoder.device)
    with vectors_at(text_encoder, vectors):
        states = clip_states(text_encoder, flat, clip_skip)
    states = states.reshape(b, n * length, states.shape[-1])
    if n == 1:
        return states
    parts = [states[:, :1]] + [states[:, i : i + CHUNK] for i in range(1, n * length, length)] + [states[:, -1:]]
    return torch.cat(parts, dim=1)
