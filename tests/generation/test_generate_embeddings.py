"""Embeddings in generation on the tiny model: the project's `embeddings/` folder in the negative prompt, WebUI's
`TI hashes` in the PNG, bad files refused before any image, and a face LoRA's bundled trigger used for the body set."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from charframe.character import load_character
from charframe.errors import CharframeError
from charframe.generation import generate as gen
from charframe.generation.embeddings import with_triggers
from charframe.generation.generate import generate_set
from charframe.generation.pnginfo import parse_parameters, read_parameters
from charframe.lora.io import save_lora_file
from charframe.models.embeddings import Embedding, bundle_tensors
from charframe.models.tiny import build_tiny_sd
from charframe.testing.synthetic_lora import kohya_targets, random_network
from generation_helpers import make_project


def _with_negative(ch, negative: str):
    ch.path.write_text(f'negative = "{negative}"\n' + ch.path.read_text(), encoding="utf-8")
    return load_character(ch.path)


def _one(ch, **kw) -> tuple[np.ndarray, dict[str, str], str]:
    res = generate_set(ch, kw.pop("kind", "f"), codes=kw.pop("codes", ["f12"]), candidates=1, progress=False,
                       device="cpu", **kw)
    path = res.written[0]
    with Image.open(path) as im:
        px = np.asarray(im.convert("RGB"))
    text = read_parameters(path)
    prompt, _, fields = parse_parameters(text)
    if "TI hashes" in fields:  # written quoted, as WebUI writes it (the value holds ':' and ',')
        assert f'TI hashes: "{fields["TI hashes"]}"' in text
    path.unlink()
    return px, fields, prompt


def test_negative_embedding_changes_the_image_and_is_in_the_infotext(tmp_path: Path) -> None:
    ch = _with_negative(make_project(tmp_path), "EasyNegative, lowres")
    folder = tmp_path / "embeddings" / "negatives"
    folder.mkdir(parents=True)
    path = folder / "EasyNegative.safetensors"
    save_file({"emb_params": torch.randn(3, 32, generator=torch.Generator().manual_seed(3)) * 2}, str(path))
    with_emb, fields, _ = _one(ch)
    assert fields["TI hashes"] == f"EasyNegative: {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    path.unlink()
    plain, fields, _ = _one(ch)
    assert "TI hashes" not in fields
    assert not np.array_equal(with_emb, plain)  # the word was encoded as text without the file


def test_folder_comes_from_paths_embeddings(tmp_path: Path) -> None:
    ch = _with_negative(make_project(tmp_path), "badneg")
    (tmp_path / "charframe.toml").write_text('[paths]\nembeddings = "my_embs"\n', encoding="utf-8")
    (tmp_path / "my_embs").mkdir()
    save_file({"badneg": torch.ones(32)}, str(tmp_path / "my_embs" / "badneg.safetensors"))
    _, fields, _ = _one(ch)
    assert fields["TI hashes"].startswith("badneg: ")


@pytest.mark.parametrize("case,words", [
    ("sdxl", ("SDXL",)),
    ("lora", ("a LoRA file",)),
    ("width", ("width 768", "takes 32")),
])
def test_bad_embedding_refused_before_any_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case, words) -> None:
    ch = _with_negative(make_project(tmp_path), "EasyNegative")
    (tmp_path / "embeddings").mkdir()
    path = tmp_path / "embeddings" / "EasyNegative.safetensors"
    content = {"sdxl": {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)},
               "lora": {"lora_unet_conv_in.lora_down.weight": torch.zeros(2, 4, 3, 3)},
               "width": {"emb_params": torch.zeros(2, 768)}}[case]
    save_file(content, str(path))
    if case != "width":  # a file's own problems are found before any model is loaded
        monkeypatch.setattr(gen, "load_sd", lambda *a, **k: pytest.fail("model loaded before the embedding check"))
    with pytest.raises(CharframeError) as exc:
        generate_set(ch, "f", codes=["f12"], progress=False, device="cpu")
    text = str(exc.value)
    assert "\n" not in text and "EasyNegative.safetensors" in text and all(w in text for w in words)
    assert not (tmp_path / "LoRAWork" / "krnk" / "face" / "raw").exists()


def test_unmentioned_bad_file_is_never_read(tmp_path: Path) -> None:
    ch = make_project(tmp_path)
    (tmp_path / "embeddings").mkdir()
    save_file({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)},
              str(tmp_path / "embeddings" / "someXLthing.safetensors"))
    _, fields, _ = _one(ch)
    assert "TI hashes" not in fields


def test_body_set_uses_the_face_loras_bundled_trigger(tmp_path: Path) -> None:
    """A face LoRA trained with pivotal tuning carries `krnk`: the body prompts name it first (its captions did),
    its vectors replace the word, and the infotext says so as WebUI does for a bundle (the LoRA's name)."""
    ch = make_project(tmp_path)
    sd = build_tiny_sd(0)
    state = random_network(kohya_targets(sd.unet, sd.text_encoder), rank=4, seed=1)
    trigger = Embedding("krnk", torch.randn(4, 32, generator=torch.Generator().manual_seed(9)) * 2, "t")
    lora = tmp_path / "LoRAOutput" / "krnk-face.safetensors"
    save_lora_file(lora, {**state, **bundle_tensors([trigger])}, {})
    plain_lora = tmp_path / "LoRAOutput" / "krnk-plain.safetensors"
    save_lora_file(plain_lora, state, {})
    px, fields, prompt = _one(ch, kind="b", outfit="sf", codes=["b02"], face_lora=lora)
    assert prompt.startswith("krnk, 1girl, solo") and prompt.endswith("<lora:krnk-face:0.8>")
    assert fields["TI hashes"] == "krnk: krnk-face"
    px_plain, fields_plain, prompt_plain = _one(ch, kind="b", outfit="sf", codes=["b02"], face_lora=plain_lora)
    assert prompt_plain.startswith("1girl, solo") and "TI hashes" not in fields_plain
    assert not np.array_equal(px, px_plain)


def test_with_triggers_adds_only_missing_names() -> None:
    e = [Embedding("krnk", torch.zeros(1, 4), "x"), Embedding("krnksf", torch.zeros(1, 4), "x")]
    assert with_triggers("1girl", e) == "krnk, krnksf, 1girl"
    assert with_triggers("(KRNK:1.2), 1girl, krnksf", e) == "(KRNK:1.2), 1girl, krnksf"
    assert with_triggers("krnksfx, krnk-2", e) == "krnk, krnksf, krnksfx, krnk-2"
    assert with_triggers("", e[:1]) == "krnk" and with_triggers("a", []) == "a"


def test_ti_field_reads_every_edited_text_in_webuis_order() -> None:
    """Prompt editing encodes each scheduled text (one encoder call per side, chunk by chunk over the batch): an
    embedding that only some steps see is named too, the prompt's before the negative's."""
    from charframe.generation.embeddings import ti_field
    from charframe.models.embeddings import EmbeddingSet
    from charframe.models.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    es = EmbeddingSet(tok, [Embedding("EasyNegative", torch.zeros(2, 768), "f", "aaaaaaaaaaaa"),
                            Embedding("badhandv4", torch.zeros(1, 768), "f", "bbbbbbbbbbbb"),
                            Embedding("krnk", torch.zeros(4, 768), "f", "cccccccccccc")])
    assert ti_field("1girl, [krnk:cat:0.5]", "[badhandv4:EasyNegative:0.5]", tok, es, 20) == \
        "krnk: cccccccccccc, badhandv4: bbbbbbbbbbbb, EasyNegative: aaaaaaaaaaaa"
    assert ti_field("1girl, [krnk:cat:0.5]", "", tok, es, 1) == ""  # at one step the edit is already "cat"
    assert ti_field("a", "b", tok, None) == ""
