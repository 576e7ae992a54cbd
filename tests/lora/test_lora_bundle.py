"""A LoRA bundling textual-inversion embeddings (pivotal tuning) goes through every file tool: the bundle keys are
kept, byte for byte, by merge (a block weight of 0 included: the captions still call the word), compress and mix,
and the LoRA part is unchanged by their presence."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from charframe.generation.face_lora import apply_lora
from charframe.lora.blocks import expand_weights
from charframe.lora.functional import RankRule
from charframe.lora.io import read_network, save_lora_file
from charframe.lora.ops.compress import compress_file
from charframe.lora.ops.merge import merge_file
from charframe.lora.ops.mix import mix_files
from charframe.models.embeddings import Embedding, bundle_tensors, read_bundle
from charframe.models.tiny import build_tiny_sd
from charframe.testing.synthetic_lora import kohya_targets, random_network

FACE = "0,1,1,1,1,1,0,0,0,1,0,0,0,0,1,0,1,1,1,0,1,1,1,0,0,1"


def _files(tmp_path: Path) -> tuple[Path, Path, dict]:
    sd = build_tiny_sd(0)
    state = random_network(kohya_targets(sd.unet, sd.text_encoder), rank=4, seed=2)
    bundle = bundle_tensors([Embedding("krnk", torch.randn(4, 32), "t")])
    with_bundle, plain = tmp_path / "krnk.safetensors", tmp_path / "plain.safetensors"
    save_lora_file(with_bundle, {**state, **bundle}, {"ss_output_name": "krnk"})
    save_lora_file(plain, state, {"ss_output_name": "plain"})
    return with_bundle, plain, bundle


def _split(path: Path) -> tuple[dict, dict]:
    sd = load_file(str(path))
    return ({k: v for k, v in sd.items() if k.startswith("bundle_emb.")},
            {k: v for k, v in sd.items() if not k.startswith("bundle_emb.")})


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_merge_compress_mix_keep_the_bundle(tmp_path: Path) -> None:
    with_bundle, plain, bundle = _files(tmp_path)
    weights = expand_weights([float(x) for x in FACE.split(",")])  # BASE = 0: the text encoder modules go
    for source in (with_bundle, plain):
        merge_file(source, weights, "FACE")
        compress_file(source.with_name(f"{source.stem}-FACE.safetensors"), RankRule("sv_ratio", 16.0))
    for stem in ("krnk-FACE", "krnk-FACE-SvR16"):
        got_bundle, lora = _split(tmp_path / f"{stem}.safetensors")
        assert _same(got_bundle, bundle)
        _, plain_lora = _split(tmp_path / f"{stem.replace('krnk', 'plain')}.safetensors")
        assert _same(lora, plain_lora)  # the LoRA part is what it is without a bundle
    mixed = mix_files([(with_bundle, 0.5), (plain, 0.5)], output=tmp_path / "mix.safetensors").output
    assert _same(_split(mixed)[0], bundle)
    assert [e.name for e in read_bundle(tmp_path / "krnk-FACE-SvR16.safetensors")] == ["krnk"]


def test_readers_accept_a_bundle(tmp_path: Path) -> None:
    with_bundle, plain, bundle = _files(tmp_path)
    net = read_network(with_bundle)
    assert _same(net.bundle, bundle) and not any(name.startswith("bundle_emb") for name in net.modules)
    assert read_network(with_bundle, lazy=True).bundle.keys() == bundle.keys()
    a, b = build_tiny_sd(0), build_tiny_sd(0)
    assert apply_lora(a.unet, a.text_encoder, with_bundle, 1.0) == apply_lora(b.unet, b.text_encoder, plain, 1.0)
    assert all(torch.equal(x, y) for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values()))


def test_inspect_names_the_bundled_embeddings(tmp_path: Path) -> None:
    from charframe.lora.ops.inspect import format_report, inspect_file

    with_bundle, plain, _ = _files(tmp_path)
    rep = inspect_file(with_bundle)
    assert rep.embeddings == {"krnk": 4} and "bundles   krnk (4 vectors)" in format_report(rep)
    assert inspect_file(plain).embeddings == {} and "bundles" not in format_report(inspect_file(plain))
