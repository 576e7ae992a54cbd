"""Textual-inversion embeddings against AUTOMATIC1111's own code.

`data/webui_ti_layouts.json.gz` and `data/webui_ti_vectors.safetensors` were recorded by running WebUI's
`modules/sd_hijack_clip.py` (`tokenize_line`, `forward` with the Original emphasis), `modules/sd_hijack.py`
(`EmbeddingsWithFixes`) and `modules/textual_inversion/textual_inversion.py` (`EmbeddingDatabase`,
`create_embedding_from_data`) themselves, outside this repository with their heavy imports stubbed: the token/vector
layouts of 13 prompts with SD1.x's real tokenizer (single- and multi-vector embeddings, names sharing tokens, the
chunk end, the comma backtrack, BREAK, emphasis, a 75-vector embedding) and the conditioning of 5 prompts on the
tiny model (clip skip 1 and 2). The tiny model's final layer norm gets an offset there and here: at its default
initialisation every token's mean is exactly 0, and "restore the original mean" divides 0 by 0.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from charframe.errors import CharframeError
from charframe.generation.prompt import chunk_tokens, encode_chunks, used_embeddings
from charframe.models.embeddings import (
    BUNDLE_PREFIX, Embedding, EmbeddingSet, bundle_key, bundle_tensors, bundled_embeddings, check_widths, folder_index,
    init_vectors, load_for_prompts, read_bundle, read_embedding, substitute, ti_hashes, token_width, vectors_at,
    write_embedding,
)
from charframe.models.tiny import build_tiny_sd
from charframe.models.tokenizer import clip_tokenizer
from webui_bundle import webui_bundle_grouping

DATA = Path(__file__).parents[1] / "data"
RECORDED = json.loads(gzip.decompress((DATA / "webui_ti_layouts.json.gz").read_bytes()))
VECTORS = load_file(str(DATA / "webui_ti_vectors.safetensors"))


def _layout(chunks) -> list[dict]:
    return [{"tokens": list(c.tokens), "multipliers": [round(w, 6) for w in c.weights],
             "fixes": [[offset, e.name] for offset, e in c.fixes]} for c in chunks]


@pytest.fixture(scope="module")
def full_set() -> EmbeddingSet:
    return EmbeddingSet(clip_tokenizer(), [Embedding(name, torch.zeros(n, 768), "test")
                                           for name, n in RECORDED["full"]["embeddings"].items()])


@pytest.mark.parametrize("case", RECORDED["full"]["cases"], ids=lambda c: c["prompt"][:40])
def test_token_layout_equals_webui(full_set, case) -> None:
    """Token ids (0 where vectors go), weights and (offset, name) per chunk: exactly WebUI's tokenize_line."""
    assert _layout(chunk_tokens(case["prompt"], clip_tokenizer(), full_set)) == case["chunks"]


def test_recorded_cases_cover_the_chunk_rules() -> None:
    """The corpus holds what the issue asks for: multi-vector names moved to the next chunk, an exact fit, a
    75-vector embedding, and the comma backtrack leaving an embedding registered in the closed chunk."""
    cases = {c["prompt"]: c["chunks"] for c in RECORDED["full"]["cases"]}
    g = "girl "
    moved = cases[g * 70 + "EasyNegative"]
    assert moved[0]["fixes"] == [] and moved[1]["fixes"] == [[0, "EasyNegative"]] and moved[0]["tokens"][71] == 49407
    assert cases[g * 67 + "EasyNegative"][0]["fixes"] == [[67, "EasyNegative"]]
    quirk = cases[g * 62 + ", krnk " + g * 9 + "cat"]
    assert quirk[0]["fixes"] == [[63, "krnk"]] and quirk[0]["tokens"][64] == 49407  # vectors land in padding
    assert quirk[1]["fixes"] == [] and quirk[1]["tokens"][1:5] == [0, 0, 0, 0]  # the moved positions keep token 0
    long = cases[g * 5 + "ng_deepnegative_v1_75t, " + g * 3]
    assert long[1]["fixes"] == [[0, "ng_deepnegative_v1_75t"]] and long[1]["tokens"][1:76] == [0] * 75


def _tiny_offset_norm():
    sd = build_tiny_sd(0)
    ln = getattr(sd.text_encoder, "text_model", sd.text_encoder).final_layer_norm
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.1 * torch.randn(ln.weight.shape, generator=g))
        ln.bias.copy_(0.5 + 0.2 * torch.randn(ln.bias.shape, generator=g))
    return sd


@pytest.fixture(scope="module")
def tiny():
    sd = _tiny_offset_norm()
    names = RECORDED["tiny"]["embeddings"]
    return sd, EmbeddingSet(sd.tokenizer, [Embedding(n, VECTORS[f"embedding.{n}"], "test") for n in names])


@pytest.mark.parametrize("clip_skip", [1, 2])
@pytest.mark.parametrize("index", range(5))
def test_conditioning_equals_webui(tiny, clip_skip, index) -> None:
    """Vectors in place of the token embeddings, emphasis on their positions, mean restored: WebUI's numbers."""
    sd, embeddings = tiny
    prompt = RECORDED["tiny"]["prompts"][index]
    chunks = chunk_tokens(prompt, sd.tokenizer, embeddings)
    assert _layout(chunks) == RECORDED["tiny"]["cases"][index]["chunks"]
    with torch.no_grad():
        z = encode_chunks(chunks, sd.text_encoder, clip_skip)[0]
        plain = encode_chunks(chunk_tokens(prompt, sd.tokenizer), sd.text_encoder, clip_skip)[0]
    want = VECTORS[f"z.{clip_skip}.{index}"]
    torch.testing.assert_close(z, want, atol=1e-5, rtol=1e-5)
    assert z.shape != plain.shape or not torch.allclose(z, plain, atol=1e-3)  # the embeddings changed it


def test_vectors_get_gradients_and_hooks_are_removed(tiny) -> None:
    """The hook works under autograd (pivotal tuning trains through it) and leaves nothing behind."""
    sd, _ = tiny
    v = torch.nn.Parameter(torch.randn(2, 32))
    ids = torch.tensor([sd.tokenizer("girl", padding="max_length", max_length=77)["input_ids"]])
    with vectors_at(sd.text_encoder, [[(1, v)]]):
        out = sd.text_encoder(ids)[0]
    out.sum().backward()
    assert v.grad is not None and float(v.grad.abs().sum()) > 0
    layer = sd.text_encoder.get_input_embeddings()
    assert not layer._forward_hooks  # noqa: SLF001
    with torch.no_grad():
        assert torch.equal(layer(ids), sd.text_encoder.get_input_embeddings().weight[ids])


# --- files --------------------------------------------------------------------------------------------------------------

def _sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.mark.parametrize("layout", ["string_to_param.pt", "emb_params.safetensors", "diffusers.bin",
                                    "flat_string_to_param.safetensors", "single_vector.safetensors"])
def test_webui_layouts_read(tmp_path, layout) -> None:
    """Every layout WebUI's create_embedding_from_data reads, read the same; the name is the file stem and the TI
    hash the file's sha256 cut to 12 hex digits (WebUI's `shorthash`)."""
    vec = torch.randn(3, 768)
    name, ext = layout.split(".")
    path = tmp_path / f"{name}.{ext}"
    if name == "string_to_param":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec.requires_grad_()}, "name": "x",
                    "step": 100, "sd_checkpoint": "abc", "sd_checkpoint_name": "model"}, path)
    elif name == "diffusers":
        torch.save({"<cat-toy>": vec[0]}, path)  # learned_embeds.bin: one token, one vector
        vec = vec[:1]
    elif name == "flat_string_to_param":
        save_file({"string_to_param.*": vec}, str(path))
    elif name == "single_vector":
        save_file({"my_token": vec[0].contiguous()}, str(path))
        vec = vec[:1]
    else:
        save_file({"emb_params": vec.half()}, str(path))
        vec = vec.half().float()
    e = read_embedding(path)
    assert e.name == name and e.shorthash == _sha12(path) and e.count == vec.shape[0]
    assert e.vectors.dtype == torch.float32 and torch.equal(e.vectors, vec.detach())


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and "\x1b" not in text, text
    for w in words:
        assert w in text, text
    return text


def test_sdxl_embedding_refused_on_sd1(tmp_path) -> None:
    path = tmp_path / "negativeXL_D.safetensors"
    save_file({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, str(path))
    with pytest.raises(CharframeError) as exc:
        read_embedding(path)
    _one_line(exc, "negativeXL_D.safetensors", "SDXL")


def test_lora_file_refused(tmp_path) -> None:
    path = tmp_path / "krnk-lora.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}, str(path))
    with pytest.raises(CharframeError) as exc:
        read_embedding(path)
    _one_line(exc, "krnk-lora.safetensors", "a LoRA file", "not an embedding")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickled code ran"))


def test_pickle_with_code_refused_never_run(tmp_path) -> None:
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": _Evil(marker)}}, path)
    with pytest.raises(CharframeError) as exc:
        read_embedding(path)
    _one_line(exc, "evil.pt", "unsafe", "weights-only")
    assert not marker.exists()


def test_wrong_width_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "sd2emb.safetensors"
    save_file({"emb_params": torch.zeros(2, 1024)}, str(path))
    e = read_embedding(path)
    with pytest.raises(CharframeError) as exc:
        check_widths([e], 768)
    _one_line(exc, "sd2emb.safetensors", "1024", "768")


@pytest.mark.parametrize("content,words", [
    ({"a": torch.zeros(1, 768), "b": torch.zeros(1, 768)}, ("2 entries", "one tensor")),
    ({"emb_params": torch.zeros(76, 768)}, ("76 vectors", "75")),
    ({"emb_params": torch.full((1, 768), float("nan"))}, ("NaN",)),
    ({"emb_params": torch.zeros(2, 3, 768)}, ("not an embedding",)),
])
def test_other_bad_files_refused(tmp_path, content, words) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(content, str(path))
    with pytest.raises(CharframeError) as exc:
        read_embedding(path)
    _one_line(exc, "bad.safetensors", *words)


def test_damaged_and_empty_files_refused(tmp_path) -> None:
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    for name, word in (("zero.pt", "empty"), ("junk.safetensors", "not a readable")):
        with pytest.raises(CharframeError) as exc:
            read_embedding(tmp_path / name)
        _one_line(exc, name, word)


def test_folder_reads_only_the_files_prompts_call(tmp_path) -> None:
    """WebUI walks sub-folders; charframe reads only files whose names a prompt mentions, so an SDXL embedding
    nobody calls does not stop an SD1.x run, and one that is called stops it before anything is loaded."""
    folder = tmp_path / "embeddings"
    (folder / "neg").mkdir(parents=True)
    save_file({"emb_params": torch.ones(2, 32)}, str(folder / "neg" / "EasyNegative.safetensors"))
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, str(folder / "xl_only.safetensors"))
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("not an embedding")
    assert sorted(folder_index(folder)) == ["EasyNegative", "xl_only"]
    got = load_for_prompts(folder, ["1girl", "lowres, easy negative, (bad hands:1.2)"])
    assert [e.name for e in got] == ["EasyNegative"] and got[0].count == 2
    assert load_for_prompts(folder, ["1girl"]) == [] and load_for_prompts(tmp_path / "missing", ["x"]) == []
    with pytest.raises(CharframeError) as exc:
        load_for_prompts(folder, ["EasyNegative", "xl_only"])
    _one_line(exc, "xl_only.safetensors", "SDXL")


def test_longest_name_wins_and_names_match_tokens_not_text() -> None:
    tok = clip_tokenizer()
    es = EmbeddingSet(tok, [Embedding("bad_prompt", torch.zeros(1, 768), "a"),
                            Embedding("bad_prompt_version2", torch.zeros(2, 768), "b")])
    ids = tok("bad_prompt_version2 bad_prompt badprompt", add_special_tokens=False)["input_ids"]
    out, fixes = substitute(ids, es)
    assert [e.name for _, e in fixes] == ["bad_prompt_version2", "bad_prompt"]
    assert out[:2] == [0, 0] and len(out) == len(ids) - len(tok("bad_prompt_version2", add_special_tokens=False)[
        "input_ids"]) - len(tok("bad_prompt", add_special_tokens=False)["input_ids"]) + 3
    assert substitute(ids, None) == (ids, [])


# --- bundles -----------------------------------------------------------------------------------------------------------

def test_bundle_keys_are_one_per_embedding_as_webui_groups_them() -> None:
    embs = [Embedding("krnk", torch.randn(4, 32), "t"), Embedding("krnksf", torch.randn(2, 32), "t")]
    tensors = bundle_tensors(embs)
    assert list(tensors) == ["bundle_emb.krnk.string_to_param.*", "bundle_emb.krnksf.string_to_param.*"]
    grouped = webui_bundle_grouping({**tensors, "lora_unet_x.lora_down.weight": torch.zeros(1)})
    assert list(grouped) == ["krnk", "krnksf"]
    for e in embs:
        (only,) = grouped[e.name]["string_to_param"].values()  # WebUI asserts a single term
        assert torch.equal(only, e.vectors)
    back = bundled_embeddings(tensors, "x.safetensors", "x")
    assert [(e.name, e.shorthash) for e in back] == [("krnk", "x"), ("krnksf", "x")]  # WebUI's BundledTIHash: the LoRA
    with pytest.raises(CharframeError):
        bundle_key("with.dot")


def test_read_bundle_reads_only_bundle_keys(tmp_path) -> None:
    path = tmp_path / "face.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(2, 2), "bundle_emb.krnk.emb_params": torch.ones(4, 32)},
              str(path))
    (e,) = read_bundle(path)
    assert e.name == "krnk" and e.count == 4 and e.shorthash == "face" and e.source.endswith("face.safetensors/krnk")
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    assert read_bundle(tmp_path / "plain.safetensors") == []


def test_standalone_file_round_trips(tmp_path) -> None:
    e = Embedding("krnk", torch.randn(4, 32), "t")
    path = write_embedding(tmp_path / "krnk.safetensors", e, {"ss_steps": "10"})
    back = read_embedding(path)
    assert back.name == "krnk" and torch.equal(back.vectors, e.vectors)
    assert list(load_file(str(path))) == ["krnk"]  # diffusers' {token: tensor}


def test_ti_hashes_prompt_then_negative_names_cleaned() -> None:
    """sd_hijack_clip.forward: `name: shorthash` per encoded text, ':' and ',' dropped from names; the negative is
    encoded first and the prompt's list is put before it; an embedding without a hash is left out."""
    a, b = Embedding("a:b,c", torch.zeros(1, 8), "f", "0123456789ab"), Embedding("neg", torch.zeros(1, 8), "f", "ffffffffffff")
    nohash = Embedding("x", torch.zeros(1, 8), "f", "")
    assert ti_hashes([a, a, nohash], [b, a]) == "abc: 0123456789ab, neg: ffffffffffff, abc: 0123456789ab"
    assert ti_hashes([], []) == ""
    tok = clip_tokenizer()
    es = EmbeddingSet(tok, [Embedding("EasyNegative", torch.zeros(2, 768), "f", "h")])
    assert [e.name for e in used_embeddings(chunk_tokens("EasyNegative, x, (easynegative:1.2)", tok, es))] == \
        ["EasyNegative", "EasyNegative"]


def test_init_vectors_spread_the_text_as_webui_does() -> None:
    sd = build_tiny_sd(0)
    weight = sd.text_encoder.get_input_embeddings().weight
    ids = sd.tokenizer("white girl", add_special_tokens=False)["input_ids"]
    v = init_vectors(sd.tokenizer, sd.text_encoder, "white girl", 4)
    assert len(ids) == 2 and torch.equal(v[0], weight[ids[0]]) and torch.equal(v[1], weight[ids[0]])
    assert torch.equal(v[2], weight[ids[1]]) and torch.equal(v[3], weight[ids[1]])
    assert float(init_vectors(sd.tokenizer, sd.text_encoder, "", 2).abs().sum()) == 0
    assert token_width(sd.text_encoder) == 32 and BUNDLE_PREFIX == "bundle_emb."
