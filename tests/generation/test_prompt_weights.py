"""A1111 prompt syntax: parsing (WebUI's documented examples), 75-token chunks, weighted embeddings checked
against embeddings computed by hand on the tiny CLIP (clip skip honoured)."""

from __future__ import annotations

import pytest
import torch

from charframe.generation.prompt import CHUNK, chunk_tokens, encode_chunks, encode_pair, parse_attention
from charframe.models.tiny import build_tiny_sd


@pytest.fixture(scope="module")
def sd():
    return build_tiny_sd(0)


@pytest.mark.parametrize("text,expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.1 * 1.1 * 1.3), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.1 ** 4), (".", 1.1)]),
    ("[faint]", [("faint", 1 / 1.1)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("cat <lora:krnk:0.8>, (ears:1.4)", [("cat , ", 1.0), ("ears", 1.4)]),
    ("", [("", 1.0)]),
])
def test_parse_attention_matches_webui(text, expected) -> None:
    got = parse_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_chunks_of_75_with_bos_eos_and_padding(sd) -> None:
    tok = sd.tokenizer
    bos, eos = tok.bos_token_id, tok.eos_token_id
    one = chunk_tokens("girl", tok)
    girl = tok("girl", add_special_tokens=False)["input_ids"]
    assert len(one) == 1 and len(one[0].tokens) == CHUNK + 2
    assert one[0].tokens == (bos, *girl, *[eos] * (CHUNK - len(girl)), eos)
    long = chunk_tokens(" ".join(["girl"] * 80), tok)  # 80 single-token words, no comma
    assert len(long) == 2 and all(len(c.tokens) == 77 for c in long)
    assert long[0].tokens[1:76] == (girl[0],) * 75 and long[1].tokens[1:6] == (girl[0],) * 5
    assert long[1].tokens[6] == eos
    exactly = chunk_tokens(" ".join(["girl"] * 75), tok)
    assert len(exactly) == 1


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(sd) -> None:
    tok = sd.tokenizer
    comma = tok.convert_tokens_to_ids(",</w>")
    text = " ".join(["girl"] * 70) + ", " + " ".join(["cat"] * 10)
    chunks = chunk_tokens(text, tok)
    first = list(chunks[0].tokens)
    assert first[71] == comma and first[72:76] == [tok.eos_token_id] * 4  # broke right after the comma
    cat = tuple(tok("cat", add_special_tokens=False)["input_ids"])
    assert chunks[1].tokens[1:1 + 10 * len(cat)] == cat * 10 and chunks[1].tokens[1 + 10 * len(cat)] == tok.eos_token_id


def test_break_starts_a_new_chunk(sd) -> None:
    assert len(chunk_tokens("girl BREAK cat", sd.tokenizer)) == 2


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_weighted_embeddings_by_hand(sd, clip_skip: int) -> None:
    tok, te = sd.tokenizer, sd.text_encoder
    girl = tok("girl", add_special_tokens=False)["input_ids"]
    cat = tok("cat", add_special_tokens=False)["input_ids"]
    ids = [tok.bos_token_id, *girl, *cat] + [tok.eos_token_id] * (76 - len(girl) - len(cat))
    w = torch.ones(77)
    w[1 + len(girl):1 + len(girl) + len(cat)] = 1.5
    with torch.no_grad():
        out = te(torch.tensor([ids]), output_hidden_states=True)
        z = out.last_hidden_state if clip_skip == 1 else getattr(te, "text_model", te).final_layer_norm(out.hidden_states[-2])
        expected = z * w[None, :, None]
        expected = expected * (z.mean() / expected.mean())
        got = encode_chunks(chunk_tokens("girl (cat:1.5)", tok), te, clip_skip)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # all-1 weights: the mean restoration is a no-op and the result is the plain CLIP output
    with torch.no_grad():
        plain = encode_chunks(chunk_tokens("girl cat", tok), te, clip_skip)
        ids2 = [tok.bos_token_id, *girl, *cat] + [tok.eos_token_id] * (76 - len(girl) - len(cat))
        out2 = te(torch.tensor([ids2]), output_hidden_states=True)
        ref = out2.last_hidden_state if clip_skip == 1 else getattr(te, "text_model", te).final_layer_norm(out2.hidden_states[-2])
    torch.testing.assert_close(plain, ref, rtol=0, atol=1e-6)


def test_pair_is_padded_to_equal_length(sd) -> None:
    pos, neg = encode_pair(" ".join(["girl"] * 100), "cat", sd.tokenizer, sd.text_encoder, 2)
    assert pos.shape == neg.shape == (1, 154, 32)
    with torch.no_grad():
        empty = encode_chunks(chunk_tokens("", sd.tokenizer), sd.text_encoder, 2)
    torch.testing.assert_close(neg[:, 77:], empty)
