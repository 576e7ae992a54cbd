"""A1111 (WebUI) prompt syntax, really applied: emphasis, 75-token chunks, weighted CLIP embeddings.

What WebUI computes, step by step, so a prompt copied from WebUI means the same here:
1. `parse_attention`: `(text)` ×1.1, `[text]` ÷1.1, `(text:1.3)` ×1.3 (nesting multiplies), `\\(` `\\)` `\\[` `\\]`
   `\\\\` are literal, unbalanced brackets close at the end, `BREAK` starts a new chunk. `<lora:…>` style
   extra-network tags are removed (charframe applies LoRAs itself).
2. `chunk_tokens`: every fragment is tokenized without special tokens; tokens fill chunks of 75. When a
   chunk is full and the last comma is at most 20 tokens back, the tokens after that comma move to the next
   chunk (WebUI's "comma padding backtrack"). Each chunk is padded with end tokens to 75, then gets
   BOS + … + EOS (77 tokens); every token keeps the weight of its fragment (1.0 for BOS/EOS/padding).
   A textual-inversion embedding's name (`models.embeddings.EmbeddingSet`) takes one position per vector, with
   the weight of its fragment; when its vectors would cross the chunk's end the chunk is closed (padded) and
   they start the next one. A comma backtrack moves the tokens after the comma but leaves an embedding among
   them registered in the closed chunk (its vectors land in that chunk's padding, the moved positions keep
   token 0): WebUI's own behaviour, kept so a WebUI prompt gives the same conditioning.
3. `encode_chunks`: each chunk through CLIP (with clip skip: hidden state `-clip_skip` and the final layer
   norm), hidden states multiplied by their token weights, then rescaled so the chunk's mean equals the
   unweighted mean ("original" emphasis). Chunks are concatenated along the token axis.
`encode_prompt` is one text's embeddings (what generation uses: WebUI by default does not pad prompt and negative
to the same length, it runs them through the UNet separately when their lengths differ). `encode_pair` pads the
shorter with the empty prompt's chunk (WebUI's optional "pad prompt/negative prompt"), for diffusers pipelines
that need one batch (training samples). The text parsing itself is `charframe.prompt_syntax`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charframe.models.clip import clip_states
from charframe.models.embeddings import Embedding, EmbeddingSet, vectors_at
from charframe.prompt_syntax import BREAK, ROUND, SQUARE, parse_attention  # noqa: F401 (re-exported)

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass(frozen=True)
class Chunk:
    """77 token ids (BOS, 75 tokens or end-token padding, EOS) and their weights; `fixes`: (offset, embedding) of
    each embedding whose vectors start at token `offset + 1` (offsets count from after BOS, as WebUI's)."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]
    fixes: tuple[tuple[int, Embedding], ...] = ()


def chunk_tokens(text: str, tokenizer: Any, embeddings: EmbeddingSet | None = None) -> list[Chunk]:
    """The prompt as WebUI's 77-token chunks (see the module docstring), with `embeddings` in place of their names."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    parsed = parse_attention(text)
    ids = tokenizer([t for t, _ in parsed], truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
    chunks: list[Chunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    fixes: list[tuple[int, Embedding]] = []
    last_comma = -1

    def close() -> None:
        nonlocal tokens, weights, fixes, last_comma
        pad = CHUNK - len(tokens)
        chunks.append(Chunk(tuple([bos, *tokens, *[eos] * pad, eos]), tuple([1.0, *weights, *[1.0] * pad, 1.0]),
                            tuple(fixes)))
        tokens, weights, fixes, last_comma = [], [], [], -1

    for (fragment, weight), fragment_ids in zip(parsed, ids):
        if fragment == "BREAK" and weight == BREAK:
            close()
            continue
        position = 0
        while position < len(fragment_ids):
            token = fragment_ids[position]
            if token == comma:
                last_comma = len(tokens)
            elif len(tokens) == CHUNK and last_comma != -1 and len(tokens) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved, moved_w = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close()
                tokens, weights = moved, moved_w
            if len(tokens) == CHUNK:
                close()
            found = embeddings.find(fragment_ids, position) if embeddings else None
            if found is None:
                tokens.append(token)
                weights.append(weight)
                position += 1
                continue
            embedding, span = found
            if len(tokens) + embedding.count > CHUNK:
                close()
            fixes.append((len(tokens), embedding))
            tokens += [0] * embedding.count
            weights += [weight] * embedding.count
            position += span
    if tokens or not chunks:
        close()
    return chunks


def encode_chunks(chunks: list[Chunk], text_encoder: Any, clip_skip: int = 1) -> Any:
    """(1, 77·n, width) weighted embeddings of the chunks, with WebUI's mean restoration per chunk."""
    import torch

    device = text_encoder.device
    ids = torch.tensor([c.tokens for c in chunks], device=device)
    with vectors_at(text_encoder, [[(offset + 1, e.vectors) for offset, e in c.fixes] for c in chunks]):
        z = clip_states(text_encoder, ids, clip_skip)
    weights = torch.tensor([c.weights for c in chunks], device=device, dtype=z.dtype)
    original = z.mean(dim=(1, 2), keepdim=True)
    z = z * weights.unsqueeze(-1)
    new = z.mean(dim=(1, 2), keepdim=True)
    z = z * torch.where(new == 0, torch.ones_like(new), original / new)  # an exact 0 mean (degenerate model): as is
    return z.reshape(1, -1, z.shape[-1])


def used_embeddings(chunks: list[Chunk]) -> list[Embedding]:
    """The embeddings a text's chunks call, in order of use (for the infotext's `TI hashes`)."""
    return [e for c in chunks for _, e in c.fixes]


def encode_prompt(text: str, tokenizer: Any, text_encoder: Any, clip_skip: int = 1,
                  embeddings: EmbeddingSet | None = None) -> Any:
    """(1, 77·chunks, width) weighted embeddings of one prompt text (no padding to another prompt's length)."""
    import torch

    with torch.no_grad():
        return encode_chunks(chunk_tokens(text, tokenizer, embeddings), text_encoder, clip_skip)


def encode_pair(prompt: str, negative: str, tokenizer: Any, text_encoder: Any, clip_skip: int = 1,
                embeddings: EmbeddingSet | None = None) -> tuple[Any, Any]:
    """Weighted embeddings of prompt and negative, padded to the same number of chunks."""
    import torch

    pos, neg = chunk_tokens(prompt, tokenizer, embeddings), chunk_tokens(negative, tokenizer, embeddings)
    empty = chunk_tokens("", tokenizer)[0]
    n = max(len(pos), len(neg))
    pos += [empty] * (n - len(pos))
    neg += [empty] * (n - len(neg))
    with torch.no_grad():
        return encode_chunks(pos, text_encoder, clip_skip), encode_chunks(neg, text_encoder, clip_skip)
